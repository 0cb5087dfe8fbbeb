#!/usr/bin/env bash
# bench/http.sh -- benchmark of pg_workflow's http steps on a throwaway
# PostgreSQL 15 server, against a local nginx that answers after 50 ms.
#
# Starts nginx with bench/nginx.conf (127.0.0.1:8497, prefix in a temporary
# directory; GET /slow answers {"ok": true} after echo_sleep 0.05), checks
# with curl that /slow takes about 50 ms, then starts a fresh cluster under
# /tmp (default port 5496, Unix socket only) with
#   shared_preload_libraries = 'pg_workflow', track_commit_timestamp = on
# and otherwise default settings, defines the one-step workflow
#   {"steps": [{"name": "call", "http": {"url": "http://127.0.0.1:8497/slow"}}]}
# and, after an unmeasured warm-up, ROUNDS times in the same server, starts
# STEPS runs of it in one transaction and polls wf.runs every 100 ms until
# all have ended, while sampling each executor's RSS, Private_Dirty
# (/proc/PID/smaps_rollup) and RssAnon every 100 ms. Per round it prints
# requests/s, wall time, failures, the executors' CPU time and the
# executors' memory before, at peak and after; then a summary against the
# targets (>= 2000 requests/s; private memory flat across rounds). Stops
# nginx and the server at the end (also on failure or interrupt).
# See bench/README.md, section "HTTP benchmark".
#
# Usage: bench/http.sh [--quick] [--workers N] [--steps N] [--rounds N]
#                      [--warmup N] [--keep] [--port P] [--http-port P] [--perf]
#   --quick        500 steps, 1 round, for smoke tests (not for figures)
#   --workers N    pg_workflow.workers (default 2)
#   --steps N      runs (one http step each) per round (default 5000)
#   --rounds N     rounds in the same server (default 3)
#   --warmup N     runs of the warm-up, not measured (default: as --steps)
#   --keep         leave the server and nginx running at the end
#   --port P       server port (default 5496)
#   --http-port P  nginx port on 127.0.0.1 (default 8497)
#   --perf         also profile the executors with perf during round 1
#   -h, --help     this text
#
# Run as root: nginx-light and libnginx-mod-http-echo are installed with
# apt-get when missing (the system nginx service that Debian may start is
# then stopped and disabled), server programs run as user postgres through
# runuser, nginx runs from a temporary prefix. Needs bash, curl, psql,
# initdb and pg_ctl of PostgreSQL 15 (found with pg_config, or $PG_CONFIG)
# and pg_workflow installed (make install).
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$BENCH_DIR/lib.sh"

LOG_TAG=http-bench
WORK_PREFIX=/tmp/pgwf-http
SERVER_CONF=(
	"shared_preload_libraries = 'pg_workflow'"
	"track_commit_timestamp = on"
)
ROW_WIDTHS=(38 16 26)

# Options.
PORT=5496
HTTP_PORT=8497
WORKERS=2
KEEP=0
QUICK=0
PERF=0
OPT_STEPS=
OPT_ROUNDS=
OPT_WARMUP=

# Sizes (full mode; --quick lowers them).
STEPS=5000
ROUNDS=3
WARMUP_RUNS=				# default: STEPS (one unmeasured round); --quick: 10
WAIT_LIMIT_S=600
POLL_S=0.1					# wf.runs poll and memory sampling interval

# Targets.
TARGET_RPS=2000
FLAT_PCT=10					# last round's peak private memory within 10 %
FLAT_KB=5120				# ... or 5 MiB of the first's

NGINX_CONF=$BENCH_DIR/nginx.conf
ECHO_MODULE=/usr/lib/nginx/modules/ngx_http_echo_module.so
NGINX_PACKAGES=(nginx-light libnginx-mod-http-echo)
WORKFLOW=pgwf_bench_http

# State (lib.sh has the server's).
NGINX_BIN=
NGX=						# nginx prefix directory
URL=
NGINX_PID=
SAMPLER_PID=
EXEC_PIDS=()

# Results.
declare -A R=()

parse_args() {
	while (($# > 0)); do
		case "$1" in
		--quick) QUICK=1 ;;
		--keep) KEEP=1 ;;
		--perf) PERF=1 ;;
		--workers | --steps | --rounds | --warmup | --port | --http-port)
			(($# >= 2)) || die "$1 needs a number"
			set -- "$1=$2" "${@:3}"
			continue
			;;
		--workers=*) WORKERS=${1#*=} ;;
		--steps=*) OPT_STEPS=${1#*=} ;;
		--rounds=*) OPT_ROUNDS=${1#*=} ;;
		--warmup=*) OPT_WARMUP=${1#*=} ;;
		--port=*) PORT=${1#*=} ;;
		--http-port=*) HTTP_PORT=${1#*=} ;;
		-h | --help)
			usage
			exit 0
			;;
		*)
			usage >&2
			die "unknown option '$1'"
			;;
		esac
		shift
	done
	posint "$WORKERS" || die "--workers must be a positive integer"
	local p
	for p in "$PORT" "$HTTP_PORT"; do
		if ! [[ "$p" =~ ^[0-9]+$ ]] || ((p < 1024 || p > 65535)); then
			die "--port and --http-port must be in 1024..65535"
		fi
	done
	((PORT != HTTP_PORT)) || die "--port and --http-port must differ"
	if ((QUICK)); then
		STEPS=500
		ROUNDS=1
		WARMUP_RUNS=10
	fi
	if [[ -n "$OPT_STEPS" ]]; then
		posint "$OPT_STEPS" || die "--steps must be a positive integer"
		STEPS=$OPT_STEPS
	fi
	if [[ -n "$OPT_ROUNDS" ]]; then
		posint "$OPT_ROUNDS" || die "--rounds must be a positive integer"
		ROUNDS=$OPT_ROUNDS
	fi
	if [[ -n "$OPT_WARMUP" ]]; then
		posint "$OPT_WARMUP" || die "--warmup must be a positive integer"
		WARMUP_RUNS=$OPT_WARMUP
	fi
	[[ -n "$WARMUP_RUNS" ]] || WARMUP_RUNS=$STEPS
	URL="http://127.0.0.1:$HTTP_PORT/slow"
}

# kB -> MiB with one decimal.
mib() { fmt '%.1f' "$(awk -v k="$1" 'BEGIN { print k / 1024 }')"; }

# Is something listening on TCP port $1? (false when ss is missing)
port_busy() {
	command -v ss >/dev/null || return 1
	[[ -n "$(ss -ltnH "sport = :$1" 2>/dev/null)" ]]
}

# ---------------------------------------------------------------------------
# nginx
# ---------------------------------------------------------------------------

# Installs nginx-light and the echo module when missing. The package's
# postinst may start the system service (on port 80, unless policy-rc.d
# forbids it): if the install started it, stop it and disable it, and check
# that port 80 is free again. An nginx that was already installed is left
# alone.
ensure_nginx() {
	local pkg missing=() started_before=0 port80_before=0 pid
	NGINX_BIN=$(command -v nginx || true)
	[[ -z "$NGINX_BIN" && -x /usr/sbin/nginx ]] && NGINX_BIN=/usr/sbin/nginx
	if [[ -n "$NGINX_BIN" && -f "$ECHO_MODULE" ]]; then
		return 0
	fi
	[[ "$(id -u)" -eq 0 ]] || die "nginx or its echo module is missing; install ${NGINX_PACKAGES[*]} (as root)"
	command -v apt-get >/dev/null || die "nginx is missing and this is not a Debian-like system: install nginx with the echo module"
	for pkg in "${NGINX_PACKAGES[@]}"; do
		if [[ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" != "install ok installed" ]]; then
			missing+=("$pkg")
		fi
	done
	((${#missing[@]} > 0)) || die "${NGINX_PACKAGES[*]} are installed but nginx or $ECHO_MODULE is missing"
	for pkg in "${missing[@]}"; do
		[[ "$(apt-cache policy "$pkg" 2>/dev/null | awk '/Candidate:/ { print $2 }')" =~ ^(|\(none\))$ ]] &&
			die "package $pkg is not available (apt-get update?)"
	done
	[[ -s /run/nginx.pid ]] && kill -0 "$(cat /run/nginx.pid)" 2>/dev/null && started_before=1
	port_busy 80 && port80_before=1

	log "installing ${missing[*]}"
	if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/tmp/pgwf-http-apt.log 2>&1; then
		tail -n 20 /tmp/pgwf-http-apt.log >&2
		die "apt-get install ${missing[*]} failed (log: /tmp/pgwf-http-apt.log)"
	fi
	if ((!started_before)); then
		# Stop the system service if the install started it, and keep it
		# from starting at boot.
		if [[ -s /run/nginx.pid ]] && kill -0 "$(cat /run/nginx.pid)" 2>/dev/null; then
			log "the install started the system nginx service: stopping it"
			service nginx stop >/dev/null 2>&1 || true
			if [[ -s /run/nginx.pid ]]; then
				pid=$(cat /run/nginx.pid)
				kill -QUIT "$pid" 2>/dev/null || true
				for _ in {1..50}; do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
				kill -0 "$pid" 2>/dev/null && kill -TERM "$pid" 2>/dev/null
			fi
		fi
		if command -v systemctl >/dev/null; then
			systemctl disable nginx >/dev/null 2>&1 || true
		fi
		if command -v update-rc.d >/dev/null; then
			update-rc.d nginx disable >/dev/null 2>&1 || true
		fi
		if ((!port80_before)); then
			for _ in {1..50}; do port_busy 80 || break; sleep 0.1; done
			port_busy 80 && die "port 80 is still in use after stopping the system nginx"
		fi
	fi
	NGINX_BIN=$(command -v nginx || echo /usr/sbin/nginx)
	[[ -x "$NGINX_BIN" && -f "$ECHO_MODULE" ]] || die "nginx or $ECHO_MODULE still missing after the install"
}

start_nginx() {
	local conf=$NGINX_CONF i
	NGX="$WORK/nginx"
	mkdir -p "$NGX"
	if ((HTTP_PORT != 8497)); then
		conf="$NGX/nginx.conf"
		sed "s/127\.0\.0\.1:8497/127.0.0.1:$HTTP_PORT/" "$NGINX_CONF" >"$conf"
	fi
	port_busy "$HTTP_PORT" && die "port $HTTP_PORT is in use (--http-port)"
	if ! "$NGINX_BIN" -t -q -c "$conf" -p "$NGX/" -e "$NGX/error.log" >"$NGX/nginx.out" 2>&1; then
		cat "$NGX/nginx.out" >&2
		die "nginx -t failed for $conf"
	fi
	log "starting nginx on 127.0.0.1:$HTTP_PORT (prefix $NGX)"
	"$NGINX_BIN" -c "$conf" -p "$NGX/" -e "$NGX/error.log" >>"$NGX/nginx.out" 2>&1 &
	NGINX_PID=$!
	for ((i = 0; i < 100; i++)); do
		kill -0 "$NGINX_PID" 2>/dev/null || {
			NGINX_PID=
			cat "$NGX/nginx.out" "$NGX/error.log" >&2 2>/dev/null || true
			die "nginx exited at start"
		}
		curl -fsS -o /dev/null "http://127.0.0.1:$HTTP_PORT/health" 2>/dev/null && return 0
		sleep 0.1
	done
	die "nginx does not answer on 127.0.0.1:$HTTP_PORT after 10 s"
}

stop_nginx() {
	[[ -n "$NGINX_PID" ]] || return 0
	log "stopping nginx"
	stop_pid TERM "$NGINX_PID"
	NGINX_PID=
}

# Five sequential GET /slow with curl: each must take about 50 ms.
check_nginx() {
	local i line code ctype t times=() body
	body=$(curl -fsS "$URL") || die "GET $URL failed"
	[[ "$body" == '{"ok": true}' ]] || die "GET $URL answered '$body', not {\"ok\": true}"
	for ((i = 0; i < 5; i++)); do
		line=$(curl -sS -o /dev/null -w '%{http_code} %{content_type} %{time_total}' "$URL")
		read -r code ctype t <<<"$line"
		[[ "$code" == 200 && "$ctype" == application/json* ]] ||
			die "GET $URL: status $code, content type $ctype"
		times+=("$(fmt '%.1f' "$(awk -v t="$t" 'BEGIN { print t * 1000 }')")")
	done
	R[curl_ms]=$(printf '%s\n' "${times[@]}" | sort -n | sed -n 3p)
	R[curl_all]=${times[*]}
	awk -v m="${R[curl_ms]}" 'BEGIN { exit !(m >= 45 && m <= 100) }' ||
		die "GET $URL takes ${R[curl_ms]} ms (median of 5), not about 50 ms"
}

# ---------------------------------------------------------------------------
# Server
# ---------------------------------------------------------------------------

# cleanup hooks: the sampler, and nginx.
cleanup_children() { stop_pid TERM "$SAMPLER_PID"; }

cleanup_kept() {
	if [[ -n "$NGINX_PID" ]]; then
		log "nginx kept running (pid $NGINX_PID): stop it with: kill $NGINX_PID"
	fi
}

cleanup_stop() { stop_nginx; }

setup_database() {
	log "creating the extension and the workflow $WORKFLOW"
	q >/dev/null <<-EOF
		CREATE EXTENSION pg_workflow;
		SELECT wf_define('$WORKFLOW', '{
		  "description": "bench/http.sh: one GET that the server answers after 50 ms",
		  "steps": [{"name": "call", "http": {"url": "$URL"}}]}');
	EOF
}

# Polls every POLL_S until no run is unfinished; sets R[done_at] to the
# time (ms since the epoch) when the poll that saw none returned.
wait_all_done() {
	local left deadline
	deadline=$(($(date +%s) + WAIT_LIMIT_S))
	while :; do
		left=$(q -c "SELECT count(*) FROM wf.runs WHERE status NOT IN ('completed','failed','cancelled')")
		((left == 0)) && break
		(($(date +%s) < deadline)) || die "$left runs unfinished after $WAIT_LIMIT_S s"
		sleep "$POLL_S"
	done
	R[done_at]=$(now_ms)
}

# ---------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------

# One line per pid: "PREFIXpid rss_kB private_dirty_kB anon_kB" (VmRSS and
# RssAnon from /proc/PID/status, Private_Dirty from smaps_rollup), read with
# bash builtins only, so that sampling forks nothing. Nothing for a pid that
# has gone. Usage: mem_of PREFIX PID...
mem_of() {
	local prefix=$1 pid k v rss pd anon
	shift
	for pid in "$@"; do
		rss=
		pd=0
		anon=0
		{
			while read -r k v _; do
				case "$k" in
				VmRSS:) rss=$v ;;
				RssAnon:)
					anon=$v
					break
					;;
				esac
			done <"/proc/$pid/status"
			while read -r k v _; do
				[[ "$k" == Private_Dirty: ]] && { pd=$v; break; }
			done <"/proc/$pid/smaps_rollup"
		} 2>/dev/null || continue
		[[ -n "$rss" ]] && printf '%s%s %s %s %s\n' "$prefix" "$pid" "$rss" "$pd" "$anon"
	done
	return 0
}

# Background: mem_of every POLL_S (on a fixed cadence: the time spent
# sampling is not added to the interval), each line prefixed with the
# sample number.
sampler() {
	local n=0 next now step_us pause
	step_us=$(awk -v s="$POLL_S" 'BEGIN { printf "%d", s * 1000000 }')
	next=${EPOCHREALTIME//[.,]/}	# microseconds, without a fork
	while :; do
		mem_of "$n " "$@"
		n=$((n + 1))
		next=$((next + step_us))
		now=${EPOCHREALTIME//[.,]/}
		if ((next > now)); then
			printf -v pause '%d.%06d' $(((next - now) / 1000000)) $(((next - now) % 1000000))
			sleep "$pause"
		else
			next=$now
		fi
	done
}

sampler_start() {
	sampler "${EXEC_PIDS[@]}" >"$WORK/mem.round$1" 2>/dev/null &
	SAMPLER_PID=$!
}

sampler_stop() {
	stop_pid TERM "$SAMPLER_PID"
	SAMPLER_PID=
}

# ---------------------------------------------------------------------------
# Report sections
# ---------------------------------------------------------------------------

print_machine() {
	local curlv
	curlv=$(curl-config --version 2>/dev/null || curl --version 2>/dev/null | head -n 1 | awk '{ print $1, $2 }')
	machine_head "($PKGLIB/pg_workflow.so of $(date -u -r "$PKGLIB/pg_workflow.so" '+%Y-%m-%d %H:%M:%S UTC' 2>/dev/null || echo '?'))"
	item "libcurl" "${curlv:-unknown}"
	item "nginx" "$("$NGINX_BIN" -v 2>&1 | sed 's/^nginx version: //'), pid $NGINX_PID, 127.0.0.1:$HTTP_PORT"
	machine_tail
	print_settings shared_preload_libraries track_commit_timestamp fsync \
		synchronous_commit wal_sync_method shared_buffers \
		max_wal_size autovacuum

	section "HTTP server"
	item "GET" "$URL -> {\"ok\": true} after echo_sleep 0.05"
	printf '  %-22s %s ms (5 sequential curl requests: %s ms)\n' "curl time, median" \
		"${R[curl_ms]}" "${R[curl_all]// /, }"
}

# The warm-up opens the connections and takes the executors' memory to its
# working size (a first batch of requests in flight raises the heap's high
# water mark, and glibc keeps what was freed), so that the rounds compare
# steady states. Its memory, before and after, is printed.
warm_up() {
	local lo hi pids t0
	log "warm-up: $WARMUP_RUNS runs (not measured)"
	mapfile -t pids < <(executor_pids)
	mem_of "" "${pids[@]}" >"$WORK/mem.warm0"
	lo=$(max_run_id)
	t0=$(now_ms)
	q -c "SELECT count(wf_start('$WORKFLOW')) FROM generate_series(1, $WARMUP_RUNS)" >/dev/null
	hi=$(max_run_id)
	wait_all_done
	mem_of "" "${pids[@]}" >"$WORK/mem.warm1"
	section "Warm-up: $WARMUP_RUNS runs, not measured ($((R[done_at] - t0)) ms)"
	awk 'FNR == 1 { f++ } { r[f] += $2; p[f] += $3; a[f] += $4 }
		END { printf "  executors'"'"' memory, summed (MiB): RSS %.1f -> %.1f, private %.1f -> %.1f, anon %.1f -> %.1f\n",
				r[1] / 1024, r[2] / 1024, p[1] / 1024, p[2] / 1024, a[1] / 1024, a[2] / 1024 }' \
		"$WORK/mem.warm0" "$WORK/mem.warm1"
	check_completed "$lo" "$hi" "warm-up"
}

# Prints the executors' memory in round $1: per executor and summed, RSS,
# Private_Dirty and RssAnon before the start, at the peak of the samples
# and after the end. The peak of the sum is the highest sum of one sample
# (the before and after readings count as samples). Sets R[rN_*].
print_memory() {
	local r=$1 line
	printf '  executors'"'"' memory (MiB), sampled every %s s (%s samples):\n' "$POLL_S" \
		"$(awk '{ print $1 }' "$WORK/mem.round$r" | sort -u | wc -l)"
	printf '    %-8s %-26s   %-26s   %-26s\n' "" "----------- RSS ----------" \
		"-- private (Private_Dirty)" "----- anon (RssAnon) -----"
	printf '    %-8s %8s %8s %8s   %8s %8s %8s   %8s %8s %8s\n' "pid" \
		before peak after before peak after before peak after
	line=$( {
		sed 's/^/b /' "$WORK/mem.before$r"
		cat "$WORK/mem.round$r"
		sed 's/^/a /' "$WORK/mem.after$r"
	} | awk '
		function m(k) { return k / 1024 }
		{
			s = $1; pid = $2
			if (!(pid in seen)) { seen[pid] = 1; pids[++n] = pid }
			for (f = 3; f <= 5; f++) {
				if ($f > peak[pid, f]) peak[pid, f] = $f
				sum[s, f] += $f
				if (s == "b") { bef[pid, f] = $f; tb[f] += $f }
				if (s == "a") { aft[pid, f] = $f; ta[f] += $f }
			}
			samples[s] = 1
		}
		END {
			for (i = 1; i <= n; i++) {
				pid = pids[i]
				printf "    %-8s", pid > "/dev/stderr"
				for (f = 3; f <= 5; f++)
					printf " %8.1f %8.1f %8.1f  ", m(bef[pid, f]), m(peak[pid, f]), m(aft[pid, f]) > "/dev/stderr"
				printf "\n" > "/dev/stderr"
			}
			for (s in samples)
				for (f = 3; f <= 5; f++)
					if (sum[s, f] > tp[f]) tp[f] = sum[s, f]
			printf "    %-8s", "sum" > "/dev/stderr"
			for (f = 3; f <= 5; f++)
				printf " %8.1f %8.1f %8.1f  ", m(tb[f]), m(tp[f]), m(ta[f]) > "/dev/stderr"
			printf "\n" > "/dev/stderr"
			printf "%d %d %d %d %d %d\n", tp[3], tp[4], tp[5], ta[3], ta[4], ta[5]
		}' 2>&1 >"$WORK/mem.sum$r")
	printf '%s\n' "$line" | sed 's/ *$//'
	read -r "R[r${r}_rss_peak]" "R[r${r}_priv_peak]" "R[r${r}_anon_peak]" \
		"R[r${r}_rss_after]" "R[r${r}_priv_after]" "R[r${r}_anon_after]" <"$WORK/mem.sum$r"
	return 0
}

run_round() {
	local r=$1 n=$STEPS lo hi t0 t1 line cpu0 wait0 cpu1 wait1 execs
	section "Round $r of $ROUNDS: $n runs of one http step (GET /slow, 50 ms), started in one transaction"
	mapfile -t EXEC_PIDS < <(executor_pids)
	((${#EXEC_PIDS[@]} == WORKERS)) || die "expected $WORKERS executors, found ${#EXEC_PIDS[@]}"
	lo=$(max_run_id)
	mem_of "" "${EXEC_PIDS[@]}" >"$WORK/mem.before$r"
	read -r cpu0 wait0 <<<"$(sched_of "${EXEC_PIDS[@]}")"
	sampler_start "$r"
	((r == 1)) && perf_start "${EXEC_PIDS[@]}"
	t0=$(now_ms)
	q -c "SELECT count(wf_start('$WORKFLOW')) FROM generate_series(1, $n)" >/dev/null
	t1=$(now_ms)
	hi=$(max_run_id)
	((hi - lo == n)) || die "expected $n new runs, found $((hi - lo))"
	wait_all_done
	perf_stop
	sampler_stop
	read -r cpu1 wait1 <<<"$(sched_of "${EXEC_PIDS[@]}")"
	mem_of "" "${EXEC_PIDS[@]}" >"$WORK/mem.after$r"
	execs=$(executor_pids | paste -sd' ' -)
	[[ "$execs" == "${EXEC_PIDS[*]}" ]] ||
		log "round $r: the executors changed during the round (${EXEC_PIDS[*]} -> $execs): did one crash?"

	# Range predicates, no join on a CTE: with 20,000 runs a materialised
	# CTE joined to a table turns into a nested loop that takes minutes.
	line=$(q -F '|' -c "
		WITH s AS MATERIALIZED (
			SELECT status, attempt, started_at, finished_at,
				   output @> '{\"status\": 200, \"body\": {\"ok\": true}}' AS ok,
				   extract(epoch FROM finished_at - started_at) * 1000 AS ms
			  FROM wf.step WHERE run_id > $lo AND run_id <= $hi),
		r AS MATERIALIZED (
			SELECT count(*) FILTER (WHERE status = 'completed') AS completed,
				   count(*) FILTER (WHERE status = 'failed') AS failed,
				   count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
				   max(finished_at) AS last_finished
			  FROM wf.run WHERE id > $lo AND id <= $hi),
		h AS MATERIALIZED (
			SELECT min(pg_xact_commit_timestamp(xmin)) FILTER (WHERE step IS NULL AND status = 'pending') AS commit_ts,
				   count(DISTINCT pg_xact_commit_timestamp(xmin)) FILTER (WHERE step IS NOT NULL) AS commits
			  FROM wf.history_log WHERE run_id > $lo AND run_id <= $hi),
		a AS MATERIALIZED (
			SELECT count(*) FILTER (WHERE status = 'completed' AND ok) AS ok,
				   count(*) FILTER (WHERE attempt > 1) AS retried,
				   min(started_at) AS first_start, max(finished_at) AS last_finish,
				   percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS p50,
				   percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) AS p99,
				   max(ms) AS max_ms, sum(ms) AS sum_ms
			  FROM s)
		SELECT r.completed, r.failed, r.cancelled, a.ok, a.retried,
			   round(extract(epoch FROM a.last_finish - a.first_start) * 1000, 1),
			   round(extract(epoch FROM r.last_finished - h.commit_ts) * 1000, 1),
			   round(extract(epoch FROM a.first_start - h.commit_ts) * 1000, 1),
			   round(a.p50::numeric, 1), round(a.p99::numeric, 1), round(a.max_ms::numeric, 1),
			   round(a.sum_ms::numeric, 1), h.commits
		  FROM r, h, a")
	IFS='|' read -r "R[r${r}_done]" "R[r${r}_failed]" "R[r${r}_cancelled]" "R[r${r}_ok]" \
		"R[r${r}_retried]" "R[r${r}_window_ms]" "R[r${r}_wall_ms]" "R[r${r}_first_ms]" \
		"R[r${r}_p50]" "R[r${r}_p99]" "R[r${r}_max]" "R[r${r}_sum_ms]" "R[r${r}_commits]" <<<"$line"
	R[r${r}_rps]=$(fmt '%.0f' "$(awk -v n="$n" -v w="${R[r${r}_window_ms]}" 'BEGIN { print n / (w / 1000) }')")
	R[r${r}_inflight]=$(fmt '%.0f' "$(awk -v s="${R[r${r}_sum_ms]}" -v w="${R[r${r}_window_ms]}" 'BEGIN { print s / w }')")

	printf '  %-46s %s ms (%s us per wf_start, client-side)\n' "starting the runs (1 transaction)" \
		"$((t1 - t0))" "$(fmt '%.0f' "$(awk -v t=$((t1 - t0)) -v n="$n" 'BEGIN { print t * 1000 / n }')")"
	printf '  %-46s %s of %s (failed %s, cancelled %s)\n' "runs completed" \
		"${R[r${r}_done]}" "$n" "${R[r${r}_failed]}" "${R[r${r}_cancelled]}"
	printf '  %-46s %s (steps retried: %s)\n' "responses 200 {\"ok\": true} in the outputs" \
		"${R[r${r}_ok]}" "${R[r${r}_retried]}"
	printf '  %-46s %s ms\n' "first step started_at .. last finished_at" "${R[r${r}_window_ms]}"
	printf '  %-46s %s req/s\n' "requests/s ($n / that window)" "${R[r${r}_rps]}"
	printf '  %-46s %s ms (client: %s ms, polling every %s s)\n' "wall time, commit -> last run finished" \
		"${R[r${r}_wall_ms]}" "$((R[done_at] - t1))" "$POLL_S"
	printf '  %-46s %s ms\n' "commit -> first step started" "${R[r${r}_first_ms]}"
	printf '  %-46s p50 %s, p99 %s, max %s ms\n' "step duration (finished_at - started_at)" \
		"${R[r${r}_p50]}" "${R[r${r}_p99]}" "${R[r${r}_max]}"
	printf '  %-46s %s (sum of durations / window; at most %s)\n' "steps running at once, average" \
		"${R[r${r}_inflight]}" "$((WORKERS * $(q -c "SHOW pg_workflow.http_max_concurrency")))"
	printf '  %-46s %s (%s step checkpoints per commit)\n' "executor commits with a step checkpoint" \
		"${R[r${r}_commits]}" "$(fmt '%.1f' "$(awk -v n="$n" -v c="${R[r${r}_commits]}" 'BEGIN { print (c > 0 ? 2 * n / c : 0) }')")"
	# /proc/PID/schedstat: time on a CPU and time runnable but waiting for one.
	R[r${r}_cpu_ms]=$(((cpu1 - cpu0) / 1000000))
	R[r${r}_rq_ms]=$(((wait1 - wait0) / 1000000))
	printf '  %-46s %s ms = %s us per step, %s%% of %s x window\n' "executors' CPU time (schedstat)" \
		"${R[r${r}_cpu_ms]}" "$(((cpu1 - cpu0) / 1000 / n))" \
		"$(fmt '%.0f' "$(awk -v c="${R[r${r}_cpu_ms]}" -v w="${R[r${r}_window_ms]}" -v k="$WORKERS" 'BEGIN { print 100 * c / (k * w) }')")" "$WORKERS"
	printf '  %-46s %s ms, %s%% of %s x window\n' "executors runnable, waiting for a CPU" \
		"${R[r${r}_rq_ms]}" \
		"$(fmt '%.0f' "$(awk -v c="${R[r${r}_rq_ms]}" -v w="${R[r${r}_window_ms]}" -v k="$WORKERS" 'BEGIN { print 100 * c / (k * w) }')")" "$WORKERS"
	print_memory "$r"
	((r == 1)) && perf_print "round 1" 40

	if ((${R[r${r}_done]} != n)); then
		q -c "SELECT r.id, r.status, s.attempt, left(coalesce(r.error, s.error)::text, 200)
				FROM wf.run r JOIN wf.step s ON s.run_id = r.id
			   WHERE r.id > $lo AND r.id <= $hi AND r.status <> 'completed'
			   ORDER BY r.id LIMIT 5" >&2
		die "round $r: only ${R[r${r}_done]} of $n runs completed"
	fi
	return 0
}

# flat_limit FIRST_kB: the most the last round's peak may be.
flat_limit() {
	awk -v f="$1" -v p="$FLAT_PCT" -v k="$FLAT_KB" \
		'BEGIN { l = f * p / 100; if (k > l) l = k; printf "%d", f + l }'
}

print_summary() {
	local r ok first last limit
	section "Summary (workers = $WORKERS, $STEPS steps x $ROUNDS rounds$( ((QUICK)) && echo ', QUICK mode'))"
	printf '  %-5s %6s %8s %6s %8s %8s %8s %8s %8s %8s\n' "round" "req/s" "wall ms" "failed" \
		"CPU/step" "CPU wait" "RSS" "private" "anon" "priv."
	printf '  %-5s %6s %8s %6s %8s %8s %8s %8s %8s %8s\n' "" "" "" "" "" "" "peak" "peak" "peak" "after"
	for ((r = 1; r <= ROUNDS; r++)); do
		printf '  %-5s %6s %8s %6s %8s %8s %8s %8s %8s %8s\n' "$r" "${R[r${r}_rps]}" \
			"$(fmt '%.0f' "${R[r${r}_wall_ms]}")" "${R[r${r}_failed]}" \
			"$((${R[r${r}_cpu_ms]} * 1000 / STEPS)) us" "${R[r${r}_rq_ms]} ms" \
			"$(mib "${R[r${r}_rss_peak]}")" "$(mib "${R[r${r}_priv_peak]}")" \
			"$(mib "${R[r${r}_anon_peak]}")" "$(mib "${R[r${r}_priv_after]}")"
	done
	printf '  (CPU/step: the executors'"'"' CPU time per step; CPU wait: time they were\n'
	printf '  runnable but waiting for a CPU; memory in MiB, summed over the %s executors)\n\n' "$WORKERS"
	cols "figure" "value" "target" "result"
	for ((r = 1; r <= ROUNDS; r++)); do
		row "runs completed, round $r" "${R[r${r}_done]}" "= $STEPS" "$((${R[r${r}_done]} == STEPS))"
	done
	for ((r = 1; r <= ROUNDS; r++)); do
		ok=$(awk -v a="${R[r${r}_rps]}" -v t="$TARGET_RPS" 'BEGIN { print (a >= t) }')
		row "requests/s, round $r" "${R[r${r}_rps]}" ">= $TARGET_RPS" "$ok"
	done
	if ((ROUNDS > 1)); then
		first=${R[r1_priv_peak]}
		last=${R[r${ROUNDS}_priv_peak]}
		limit=$(flat_limit "$first")
		row "peak private MiB, round $ROUNDS vs 1" "$(mib "$last") vs $(mib "$first")" \
			"<= $(mib "$limit") (+${FLAT_PCT}% or 5 MiB)" "$((last <= limit))"
		first=${R[r1_anon_peak]}
		last=${R[r${ROUNDS}_anon_peak]}
		limit=$(flat_limit "$first")
		row "  peak anon MiB (no shared memory)" "$(mib "$last") vs $(mib "$first")" \
			"<= $(mib "$limit") (information)" -
	else
		row "peak private MiB (1 round)" "$(mib "${R[r1_priv_peak]}")" "needs --rounds >= 2" -
	fi
	row "peak RSS MiB, round $ROUNDS vs 1" "$(mib "${R[r${ROUNDS}_rss_peak]}") vs $(mib "${R[r1_rss_peak]}")" \
		"(grows with the tables)" -
	print_load_end
}

main() {
	local r
	parse_args "$@"
	find_bindir initdb pg_ctl psql
	command -v curl >/dev/null || die "curl not found"
	[[ -f "$NGINX_CONF" ]] || die "$NGINX_CONF not found"
	ensure_nginx
	set_traps

	printf 'pg_workflow HTTP benchmark -- %s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
	start_server
	start_nginx
	check_nginx
	setup_database
	wait_for_executors
	print_machine
	warm_up
	for ((r = 1; r <= ROUNDS; r++)); do
		run_round "$r"
	done
	print_summary
}

main "$@"
