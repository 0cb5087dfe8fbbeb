# shellcheck shell=bash
# bench/lib.sh -- functions shared by the benchmarks (run.sh, http.sh,
# fairness.sh, scale.sh): the throwaway server (initdb, start, stop, cleanup
# at exit), psql and pgbench, the executors, perf, CPU counters, and the
# parts of the report that they all print.
#
# Sourced, not run. The sourcing script defines:
#   LOG_TAG      message prefix: "[LOG_TAG] ..." on fd 9 (the script's stderr)
#   WORK_PREFIX  the cluster directory is mktemp -d WORK_PREFIX.XXXXXX
#   SERVER_CONF  array of postgresql.conf lines written after the socket
#                settings (shared_preload_libraries, track_commit_timestamp...)
#   ROW_WIDTHS   array: widths of the first three columns of the summary
#   PORT, WORKERS, KEEP, QUICK, PERF  as set by its options
#   TAG          optional: comment appended to the queries on wf.run
#   WAIT_LIMIT_S for wait_for_runs: longest wait for a range of runs
# and may redefine, after sourcing, the hooks that cleanup calls:
#   cleanup_children  end the script's own background processes
#   cleanup_kept      more messages when --keep leaves the server running
#   cleanup_stop      stop what the script started besides the server
# It opens fd 9 on stderr and sets BINDIR, PKGLIB, WORK, DATA, SERVER_STARTED,
# PERF_PID and CHILD_PID.  The default cleanup_children ends run_child's
# command; a script that redefines it calls stop_pid TERM "$CHILD_PID" too.

# State.
BINDIR=
PKGLIB=
WORK=
DATA=
SERVER_STARTED=0
PERF_PID=
CHILD_PID=

# Messages go to the script's own stderr (fd 9), even from inside redirections.
exec 9>&2
log() { printf '[%s] %s\n' "$LOG_TAG" "$*" >&9; }
die() { printf '[%s] ERROR: %s\n' "$LOG_TAG" "$*" >&9; exit 1; }

# The script's header comment.
usage() {
	awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
}

posint() { [[ "$1" =~ ^[1-9][0-9]*$ ]]; }

# find_bindir PROG...: sets BINDIR and PKGLIB, dies unless each PROG is in BINDIR.
find_bindir() {
	local pg_config=${PG_CONFIG:-}
	if [[ -z "$pg_config" ]]; then
		if [[ -x /usr/lib/postgresql/15/bin/pg_config ]]; then
			pg_config=/usr/lib/postgresql/15/bin/pg_config
		else
			pg_config=$(command -v pg_config || true)
		fi
	fi
	[[ -n "$pg_config" ]] || die "pg_config not found (install postgresql-server-dev-15 or set PG_CONFIG)"
	BINDIR=$("$pg_config" --bindir)
	# shellcheck disable=SC2034  # used by http.sh
	PKGLIB=$("$pg_config" --pkglibdir)
	local prog
	for prog in "$@"; do
		[[ -x "$BINDIR/$prog" ]] || die "$BINDIR/$prog not found"
	done
}

# Runs a server program as the cluster's owner: postgres when we are root.
as_pg() {
	if [[ "$(id -u)" -eq 0 ]]; then
		(cd / && runuser -u postgres -- "$@")
	else
		"$@"
	fi
}

# psql to database postgres (or to $PSQL_DB) as role postgres (or
# $PSQL_USER), unaligned, tuples only.
q() {
	"$BINDIR/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$WORK" -p "$PORT" \
		-U "${PSQL_USER:-postgres}" -d "${PSQL_DB:-postgres}" "$@"
}

# q_as ROLE ARGS...: q as another role (which must have LOGIN).
q_as() {
	local role=$1
	shift
	PSQL_USER=$role q "$@"
}

# pgbench on database postgres, as role postgres (or $PGB_USER).
pgbench_run() {
	"$BINDIR/pgbench" -h "$WORK" -p "$PORT" -U "${PGB_USER:-postgres}" "$@" postgres
}

# Runs a long command in the background and waits for it, so that INT and
# TERM are acted on at once (bash defers traps until a foreground command
# ends); cleanup() then ends the command.
run_child() {
	local rc=0
	"$@" &
	CHILD_PID=$!
	wait "$CHILD_PID" || rc=$?
	CHILD_PID=
	return "$rc"
}

now_ms() { echo $(($(date +%s%N) / 1000000)); }

# Formats a number with awk: fmt FORMAT VALUE
fmt() { awk -v f="$1" -v v="$2" 'BEGIN { printf f, v }'; }

section() { printf '\n== %s ==\n' "$*"; }

# ---------------------------------------------------------------------------
# Server
# ---------------------------------------------------------------------------

start_server() {
	WORK=$(mktemp -d "$WORK_PREFIX.XXXXXX")
	DATA="$WORK/data"
	if [[ "$(id -u)" -eq 0 ]]; then
		getent passwd postgres >/dev/null || die "user postgres does not exist"
		chown postgres: "$WORK"
	fi
	chmod 0700 "$WORK"

	log "initdb $DATA"
	if ! as_pg "$BINDIR/initdb" -D "$DATA" -U postgres -A trust -E UTF8 --locale=C \
		--no-sync >"$WORK/initdb.log" 2>&1; then
		cat "$WORK/initdb.log" >&2
		die "initdb failed"
	fi
	printf '%s\n' "" "# --- bench/${0##*/} ---" "port = $PORT" "listen_addresses = ''" \
		"unix_socket_directories = '$WORK'" "${SERVER_CONF[@]}" \
		"pg_workflow.database = 'postgres'" "pg_workflow.workers = $WORKERS" \
		>>"$DATA/postgresql.conf"

	log "starting the server (port $PORT, socket and log in $WORK)"
	# Set first: an interrupt during the start still stops the server.
	SERVER_STARTED=1
	# Without fd 9: a server kept running (--keep) must not hold the
	# script's stderr open.
	if ! (exec 9>&- && as_pg "$BINDIR/pg_ctl" -D "$DATA" -l "$WORK/server.log" -w -t 60 start >/dev/null); then
		tail -n 30 "$WORK/server.log" >&2 || true
		die "the server did not start (is pg_workflow installed?)"
	fi
}

stop_server() {
	((SERVER_STARTED)) || return 0
	log "stopping the server"
	if ! as_pg "$BINDIR/pg_ctl" -D "$DATA" -m fast -w -t 60 stop >/dev/null 2>&1; then
		log "fast shutdown failed; immediate shutdown"
		as_pg "$BINDIR/pg_ctl" -D "$DATA" -m immediate -w -t 60 stop >/dev/null 2>&1 || true
	fi
	SERVER_STARTED=0
}

# stop_pid SIGNAL PID: sends SIGNAL to PID, if any, and waits for it.
stop_pid() {
	[[ -n "$2" ]] || return 0
	kill -"$1" "$2" 2>/dev/null || true
	wait "$2" 2>/dev/null || true
}

# Hooks of cleanup; the script may redefine them.
cleanup_children() { stop_pid TERM "$CHILD_PID"; }
cleanup_kept() { :; }
cleanup_stop() { :; }

# EXIT trap: ends the background processes, stops the server unless --keep,
# deletes the cluster directory after a success and keeps it after a failure.
cleanup() {
	local rc=$?
	set +e
	trap - EXIT INT TERM
	cleanup_children
	stop_pid INT "$PERF_PID"
	if ((rc != 0)) && [[ -n "$WORK" && -f "$WORK/server.log" ]]; then
		log "failed (exit $rc); last lines of $WORK/server.log:"
		tail -n 20 "$WORK/server.log" | sed 's/^/    /' >&9
	fi
	if ((KEEP)) && ((SERVER_STARTED)); then
		log "server kept running: psql -h $WORK -p $PORT -U postgres postgres"
		log "stop it with: pg_ctl -D $DATA stop   (as the cluster's owner)"
		cleanup_kept
	else
		stop_server
		cleanup_stop
		if [[ -n "$WORK" ]]; then
			if ((rc == 0)); then
				rm -rf -- "$WORK"
			else
				log "kept $WORK for inspection"
			fi
		fi
	fi
	exit "$rc"
}

set_traps() {
	trap cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
}

# ---------------------------------------------------------------------------
# Executors and runs
# ---------------------------------------------------------------------------

wait_for_executors() {
	local n i
	for ((i = 0; i < 300; i++)); do
		n=$(q -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_workflow executor'")
		((n >= WORKERS)) && return 0
		sleep 0.1
	done
	die "only $n of $WORKERS pg_workflow executors are running after 30 s"
}

executor_pids() {
	q -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_workflow executor' ORDER BY pid"
}

# Waits until every run with lo < id <= hi has ended (at most WAIT_LIMIT_S).
wait_for_runs() {
	local lo=$1 hi=$2 next deadline
	deadline=$(($(date +%s) + WAIT_LIMIT_S))
	run_child q -c "SELECT wf_wait($hi, '$WAIT_LIMIT_S seconds')${TAG:+ /* $TAG */}" >/dev/null
	while :; do
		next=$(q -c "SELECT min(id) FROM wf.run WHERE id > $lo AND id <= $hi
					  AND status IN ('pending', 'running', 'waiting')${TAG:+ /* $TAG */}")
		[[ -z "$next" ]] && return 0
		(($(date +%s) < deadline)) || die "runs $((lo + 1))..$hi not finished after $WAIT_LIMIT_S s"
		run_child q -c "SELECT wf_wait($next, '10 seconds')${TAG:+ /* $TAG */}" >/dev/null
	done
}

max_run_id() { q -c "SELECT coalesce(max(id), 0) FROM wf.run${TAG:+ /* $TAG */}"; }

# check_completed LO HI WHAT: dies unless every run with LO < id <= HI completed.
# latency_cte LO HI: SQL "WITH l AS (...)": for each run with LO < id <= HI,
# ms from the commit of its wf_start to its first step's start (ms) and to
# its end (done_ms), by commit timestamps (track_commit_timestamp = on).
latency_cte() {
	cat <<SQL
		WITH l AS (
			SELECT extract(epoch FROM s.first_start - pg_xact_commit_timestamp(h.xmin)) * 1000 AS ms,
				   extract(epoch FROM r.finished_at - pg_xact_commit_timestamp(h.xmin)) * 1000 AS done_ms
			  FROM wf.run r
			  JOIN wf.history_log h
				ON h.run_id = r.id AND h.step IS NULL AND h.status = 'pending'
			  CROSS JOIN LATERAL (SELECT min(started_at) AS first_start
									FROM wf.step WHERE run_id = r.id) s
			 WHERE r.id > $1 AND r.id <= $2)
SQL
}

check_completed() {
	local lo=$1 hi=$2 what=$3 bad
	bad=$(q -c "SELECT count(*) FROM wf.run WHERE id > $lo AND id <= $hi AND status <> 'completed'${TAG:+ /* $TAG */}")
	if ((bad > 0)); then
		q -c "SELECT id, status, error FROM wf.run WHERE id > $lo AND id <= $hi
			   AND status <> 'completed' ORDER BY id LIMIT 5" >&2
		die "$bad $what runs did not complete"
	fi
}

# ---------------------------------------------------------------------------
# CPU counters
# ---------------------------------------------------------------------------

# Sum over pids of /proc/PID/schedstat: "ns on CPU, ns waiting for a CPU".
sched_of() {
	local pid cpu wait sum_cpu=0 sum_wait=0
	for pid in "$@"; do
		read -r cpu wait _ <"/proc/$pid/schedstat" 2>/dev/null || continue
		sum_cpu=$((sum_cpu + cpu))
		sum_wait=$((sum_wait + wait))
	done
	echo "$sum_cpu $sum_wait"
}

# The whole machine's CPU time from /proc/stat, in ticks: "busy total"
# (busy: everything but idle and iowait).
machine_ticks() {
	awk '$1 == "cpu" { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t; exit }' /proc/stat
}

# busy_pct "BUSY0 TOTAL0" "BUSY1 TOTAL1": the machine's busy share between
# two machine_ticks readings, in % of all its CPUs.
busy_pct() {
	local b0 t0 b1 t1
	read -r b0 t0 <<<"$1"
	read -r b1 t1 <<<"$2"
	awk -v b=$((b1 - b0)) -v t=$((t1 - t0)) 'BEGIN { printf "%.0f", (t > 0 ? 100 * b / t : 0) }'
}

# ---------------------------------------------------------------------------
# perf (--perf)
# ---------------------------------------------------------------------------

# perf_start [PID...]: profiles the given pids, by default the executors.
perf_start() {
	local pids
	((PERF)) || return 0
	if ! command -v perf >/dev/null || ! perf stat -e instructions true >/dev/null 2>&1; then
		log "perf is not usable here: no profile"
		PERF=0
		return 0
	fi
	if (($# > 0)); then
		pids=$(printf '%s\n' "$@" | paste -sd, -)
	else
		pids=$(executor_pids | paste -sd, -)
	fi
	perf record -q -g -o "$WORK/perf.data" -p "$pids" >"$WORK/perf.log" 2>&1 &
	PERF_PID=$!
	sleep 0.5
}

perf_stop() {
	stop_pid INT "$PERF_PID"
	PERF_PID=
}

# perf_print WHEN LINES: the top LINES symbols of the profile taken WHEN.
perf_print() {
	((PERF)) && [[ -f "$WORK/perf.data" ]] || return 0
	printf '\n  perf profile of the executors during %s: inclusive (children) and\n' "$1"
	printf '  self share of the samples, top named symbols (perf perturbs this run):\n'
	perf report -i "$WORK/perf.data" --children --stdio -g none \
		-F overhead_children,overhead,sym 2>/dev/null |
		grep -v '^#' | grep -v '^$' | grep -v '\] 0x0*[0-9a-f]*$' | head -"$2" | sed 's/^/  /' || true
}

# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------

# item LABEL VALUE: one line of the Machine section.
item() { printf '  %-22s %s\n' "$1" "$2"; }

# machine_head [NOTE]: the Machine section up to the pg_workflow line, with
# NOTE after the extension's version.
machine_head() {
	local cpu mem
	cpu=$(grep -m1 '^model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//' || true)
	mem=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo 2>/dev/null || true)
	section "Machine"
	item "CPUs (nproc)" "$(nproc)"
	item "CPU model" "${cpu:-unknown}"
	item "memory" "${mem:-unknown}"
	item "kernel" "$(uname -sr)"
	item "load average (start)" "$(cut -d' ' -f1-3 /proc/loadavg)"
	item "PostgreSQL" "$(q -c 'SELECT version()')"
	item "pg_workflow" "$(q -c "SELECT extversion FROM pg_extension WHERE extname = 'pg_workflow'")${1:+ $1}"
}

# The last lines of the Machine section.
machine_tail() {
	item "data directory" "$DATA (on $(df -P "$WORK" | awk 'NR == 2 { print $1 }'))"
	item "mode" "$( ((QUICK)) && echo 'QUICK (smoke test; figures not meaningful)' || echo full)"
}

# print_settings NAME...: the Settings section, these settings and pg_workflow's.
print_settings() {
	local names
	names=$(printf "'%s', " "$@")
	section "Settings"
	q -F ' = ' -c "SELECT name, setting || coalesce(' ' || unit, '') FROM pg_settings
		 WHERE name IN (${names%, })
			OR name LIKE 'pg\_workflow.%'
		 ORDER BY name" | sed 's/^/  /'
}

# cols A B C D: a line of the summary table, columns as wide as ROW_WIDTHS.
cols() {
	printf '  %-*s %-*s %-*s %s\n' "${ROW_WIDTHS[0]}" "$1" "${ROW_WIDTHS[1]}" "$2" \
		"${ROW_WIDTHS[2]}" "$3" "$4"
}

# row NAME VALUE TARGET OK (OK: 1 met, 0 missed, - no target)
row() {
	local result=
	case "$4" in
	1) result=PASS ;;
	0) result=MISS ;;
	esac
	cols "$1" "$2" "$3" "$result"
}

print_load_end() {
	printf '\n  load average at the end: %s (other work on the machine perturbs the figures)\n' \
		"$(cut -d' ' -f1-3 /proc/loadavg)"
}
