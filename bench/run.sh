#!/usr/bin/env bash
# bench/run.sh -- benchmark of pg_workflow on a throwaway PostgreSQL 15 server.
#
# Starts a fresh cluster under /tmp (default port 5497, Unix socket only) with
#   shared_preload_libraries = 'pg_workflow, pg_stat_statements'
#   pg_stat_statements.track = all, track_commit_timestamp = on
# and otherwise default settings (fsync and synchronous_commit stay on), then
# measures:
#   1. throughput  -- N runs of a 3-no-op-step workflow started in one
#                     transaction: steps/s and wall time from commit to done;
#   2. latency     -- single autocommit wf_start + wf_wait, sequential: time
#                     from wf_start's commit to the step's recorded start;
#   3. yardstick   -- pgbench, 1 client, one-row INSERT per transaction;
#   4. idle cost   -- statements and transactions the executors run while
#                     there is nothing to do;
# prints a report with a summary against the targets, and stops the server
# (also on failure or interrupt). See bench/README.md.
#
# Usage: bench/run.sh [--quick] [--workers N] [--keep] [--port P] [--perf]
#                     [--runs N] [--latency-runs N]
#   --quick      small counts, for smoke tests (not for figures)
#   --workers N  pg_workflow.workers (default 2)
#   --runs N     runs of the throughput phase (default 2000)
#   --latency-runs N  runs of the latency phase (default 500)
#   --keep       leave the server (and its directory) running at the end
#   --port P     server port (default 5497)
#   --perf       also profile the executors with perf during the throughput
#                phase (needs a working `perf`)
#   -h, --help   this text
#
# Run as root (server programs then run as user postgres through runuser) or
# as the user that should own the cluster. Needs bash, psql, pgbench, initdb
# and pg_ctl of PostgreSQL 15 (found with pg_config, or $PG_CONFIG) and
# pg_workflow installed (make install).
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$BENCH_DIR/lib.sh"

LOG_TAG=bench
WORK_PREFIX=/tmp/pgwf-bench
SERVER_CONF=(
	"shared_preload_libraries = 'pg_workflow, pg_stat_statements'"
	"pg_stat_statements.track = all"
	"track_commit_timestamp = on"
)
ROW_WIDTHS=(34 14 22)

# Options.
PORT=5497
WORKERS=2
KEEP=0
QUICK=0
PERF=0
OPT_RUNS=
OPT_LATENCY_RUNS=

# Sizes (full mode; --quick lowers them).
THROUGHPUT_RUNS=2000
LATENCY_RUNS=500
PGBENCH_SECONDS=10
IDLE_SECONDS=10
WARMUP_RUNS=50
WAIT_LIMIT_S=600

OBS_DB=pgwf_bench_obs		# the observer's database, for the idle test
TAG=pgwf-bench				# marks our own statements in pg_stat_statements

# Results.
declare -A R=()

parse_args() {
	while (($# > 0)); do
		case "$1" in
		--quick) QUICK=1 ;;
		--keep) KEEP=1 ;;
		--perf) PERF=1 ;;
		--workers)
			(($# >= 2)) || die "--workers needs a number"
			WORKERS=$2
			shift
			;;
		--workers=*) WORKERS=${1#*=} ;;
		--port)
			(($# >= 2)) || die "--port needs a number"
			PORT=$2
			shift
			;;
		--port=*) PORT=${1#*=} ;;
		--runs)
			(($# >= 2)) || die "--runs needs a number"
			OPT_RUNS=$2
			shift
			;;
		--runs=*) OPT_RUNS=${1#*=} ;;
		--latency-runs)
			(($# >= 2)) || die "--latency-runs needs a number"
			OPT_LATENCY_RUNS=$2
			shift
			;;
		--latency-runs=*) OPT_LATENCY_RUNS=${1#*=} ;;
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
	if ! [[ "$WORKERS" =~ ^[0-9]+$ ]] || ((WORKERS < 1)); then
		die "--workers must be a positive integer"
	fi
	if ! [[ "$PORT" =~ ^[0-9]+$ ]] || ((PORT < 1024 || PORT > 65535)); then
		die "--port must be in 1024..65535"
	fi
	if ((QUICK)); then
		THROUGHPUT_RUNS=200
		LATENCY_RUNS=50
		PGBENCH_SECONDS=2
		IDLE_SECONDS=2
		WARMUP_RUNS=10
	fi
	if [[ -n "$OPT_RUNS" ]]; then
		[[ "$OPT_RUNS" =~ ^[1-9][0-9]*$ ]] || die "--runs must be a positive integer"
		THROUGHPUT_RUNS=$OPT_RUNS
	fi
	if [[ -n "$OPT_LATENCY_RUNS" ]]; then
		[[ "$OPT_LATENCY_RUNS" =~ ^[1-9][0-9]*$ ]] || die "--latency-runs must be a positive integer"
		LATENCY_RUNS=$OPT_LATENCY_RUNS
	fi
}

# psql to the observer's database.
qobs() { PSQL_DB=$OBS_DB q "$@"; }

# ---------------------------------------------------------------------------
# Server
# ---------------------------------------------------------------------------

setup_database() {
	log "creating the extensions, workflows and tables"
	q -f "$BENCH_DIR/setup.sql" >/dev/null
	q -c "CREATE DATABASE $OBS_DB" >/dev/null
	qobs -c "CREATE EXTENSION pg_stat_statements" >/dev/null
}

# ---------------------------------------------------------------------------
# Report sections
# ---------------------------------------------------------------------------

print_machine() {
	machine_head ""
	machine_tail
	print_settings shared_preload_libraries pg_stat_statements.track \
		track_commit_timestamp fsync synchronous_commit \
		wal_sync_method full_page_writes shared_buffers \
		max_wal_size checkpoint_timeout autovacuum
}

warm_up() {
	local lo hi
	log "warm-up: $WARMUP_RUNS runs of noop3 and noop1 (not measured)"
	lo=$(max_run_id)
	q -c "SELECT count(wf_start('noop3')) FROM generate_series(1, $WARMUP_RUNS)" >/dev/null
	q -c "SELECT count(wf_start('noop1')) FROM generate_series(1, $WARMUP_RUNS)" >/dev/null
	hi=$(max_run_id)
	wait_for_runs "$lo" "$hi"
	check_completed "$lo" "$hi" "warm-up"
}

measure_throughput() {
	local n=$THROUGHPUT_RUNS lo hi t0 t1 t2 line pids c0 c1 k0 k1 clk
	section "1. Throughput: $n runs of 'noop3' (3 no-op sql steps), started in one transaction"
	q -c "SELECT pg_stat_statements_reset()" >/dev/null
	lo=$(max_run_id)
	mapfile -t pids < <(executor_pids)
	read -r c0 k0 <<<"$(proc_counters "${pids[@]}")"
	# shellcheck disable=SC2119  # no pids: perf_start profiles the executors
	perf_start
	t0=$(now_ms)
	q -c "SELECT count(wf_start('noop3')) FROM generate_series(1, $n)" >/dev/null
	t1=$(now_ms)
	hi=$(max_run_id)
	((hi - lo == n)) || die "expected $n new runs, found $((hi - lo))"
	wait_for_runs "$lo" "$hi"
	t2=$(now_ms)
	read -r c1 k1 <<<"$(proc_counters "${pids[@]}")"
	perf_stop
	check_completed "$lo" "$hi" "throughput"
	# The executors' CPU time over the phase, per step they ran.
	clk=$(getconf CLK_TCK 2>/dev/null || echo 100)
	R[tp_cpu_us]=$(fmt '%.0f' "$(awk -v k=$((k1 - k0)) -v c="$clk" -v s=$((3 * n)) \
		'BEGIN { print k * 1000000 / c / s }')")

	line=$(q -F '|' -c "/* $TAG */
		WITH r AS (SELECT * FROM wf.run WHERE id > $lo AND id <= $hi),
		s AS (SELECT s.* FROM wf.step s JOIN r ON r.id = s.run_id),
		c AS (SELECT min(pg_xact_commit_timestamp(h.xmin)) AS commit_ts
				FROM wf.history_log h JOIN r ON r.id = h.run_id
			   WHERE h.step IS NULL AND h.status = 'pending'),
		x AS (SELECT count(DISTINCT pg_xact_commit_timestamp(h.xmin)) AS commits
				FROM wf.history_log h JOIN r ON r.id = h.run_id
			   WHERE h.step IS NOT NULL AND h.status = 'completed')
		SELECT (SELECT count(*) FROM s WHERE status = 'completed'),
			   round(extract(epoch FROM (SELECT max(finished_at) - min(started_at) FROM s)) * 1000, 1),
			   round(extract(epoch FROM (SELECT max(finished_at) FROM r) - c.commit_ts) * 1000, 1),
			   round(extract(epoch FROM (SELECT min(started_at) FROM s) - c.commit_ts) * 1000, 2),
			   x.commits
		  FROM c, x")
	IFS='|' read -r "R[tp_steps]" "R[tp_window_ms]" "R[tp_wall_ms]" "R[tp_first_ms]" "R[tp_commits]" <<<"$line"
	R[tp_steps_per_s]=$(fmt '%.0f' "$(awk -v s="${R[tp_steps]}" -v w="${R[tp_window_ms]}" 'BEGIN { print s / (w / 1000) }')")
	R[tp_runs_per_s]=$(fmt '%.0f' "$(awk -v n="$n" -v w="${R[tp_wall_ms]}" 'BEGIN { print n / (w / 1000) }')")
	R[tp_steps_per_commit]=$(fmt '%.1f' "$(awk -v s="${R[tp_steps]}" -v c="${R[tp_commits]}" 'BEGIN { print (c > 0 ? s / c : 0) }')")

	printf '  %-44s %s ms (%s us per wf_start, client-side)\n' "starting the runs (1 transaction)" \
		"$((t1 - t0))" "$(fmt '%.0f' "$(awk -v t=$((t1 - t0)) -v n="$n" 'BEGIN { print t * 1000 / n }')")"
	printf '  %-44s %s\n' "steps completed" "${R[tp_steps]}"
	printf '  %-44s %s ms\n' "step window (first start .. last finish)" "${R[tp_window_ms]}"
	printf '  %-44s %s steps/s\n' "THROUGHPUT" "${R[tp_steps_per_s]}"
	printf '  %-44s %s ms (%s runs/s)\n' "WALL TIME commit of the starts -> all done" "${R[tp_wall_ms]}" "${R[tp_runs_per_s]}"
	printf '  %-44s %s ms\n' "  same, client-side (wf_wait returned)" "$((t2 - t1))"
	printf '  %-44s %s ms\n' "commit -> first step started" "${R[tp_first_ms]}"
	printf '  %-44s %s (%s steps per commit)\n' "executor transactions that checkpointed" "${R[tp_commits]}" "${R[tp_steps_per_commit]}"
	printf '  %-44s %s us (pg_stat_statements.track = all)\n' "executor CPU per step" "${R[tp_cpu_us]}"

	printf '\n  Top statements during the throughput phase (pg_stat_statements, all levels;\n'
	printf '  nested statements are also counted in their callers):\n'
	q -F '|' -c "
		SELECT to_char(calls, 'FM9999999'), to_char(total_exec_time, 'FM999990.0'),
			   to_char(mean_exec_time * 1000, 'FM9999990'),
			   left(regexp_replace(query, '\s+', ' ', 'g'), 78)
		  FROM pg_stat_statements
		 WHERE dbid = (SELECT oid FROM pg_database WHERE datname = 'postgres')
		   AND query NOT LIKE '%pg_stat_statements%' AND query NOT LIKE '%$TAG%'
		 ORDER BY total_exec_time DESC LIMIT 12" |
		awk -F'|' 'BEGIN { printf "  %8s %10s %8s  %s\n", "calls", "total ms", "mean us", "query" }
			{ printf "  %8s %10s %8s  %s\n", $1, $2, $3, $4 }'

	# Do the executors report their activity to the statistics system?
	R[stat_step_upd]=$(q -c "SELECT n_tup_upd FROM pg_stat_user_tables WHERE relid = 'wf.step'::regclass")
	R[stat_step_upd_expected]=$((2 * 3 * n))

	perf_print "the phase" 45
}

measure_latency() {
	local n=$LATENCY_RUNS lo hi line
	section "2. Latency: $n sequential autocommit wf_start('noop1') + wf_wait (pgbench, 1 client)"
	lo=$(max_run_id)
	if ! run_child pgbench_run -n -c 1 -t "$n" -f "$BENCH_DIR/latency.sql" >"$WORK/latency.log" 2>&1; then
		cat "$WORK/latency.log" >&2
		die "pgbench (latency) failed"
	fi
	hi=$(max_run_id)
	((hi - lo == n)) || die "expected $n new runs, found $((hi - lo))"
	wait_for_runs "$lo" "$hi"
	check_completed "$lo" "$hi" "latency"
	R[lat_client_avg]=$(awk '/^latency average/ { print $4 }' "$WORK/latency.log")

	line=$(q -F '|' -c "/* $TAG */
		$(latency_cte "$lo" "$hi")
		SELECT count(ms),
			   round(percentile_cont(0.50) WITHIN GROUP (ORDER BY ms)::numeric, 3),
			   round(percentile_cont(0.90) WITHIN GROUP (ORDER BY ms)::numeric, 3),
			   round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 3),
			   round(max(ms)::numeric, 3),
			   round(min(ms)::numeric, 3),
			   round(percentile_cont(0.50) WITHIN GROUP (ORDER BY done_ms)::numeric, 3),
			   round(percentile_cont(0.99) WITHIN GROUP (ORDER BY done_ms)::numeric, 3)
		  FROM l")
	IFS='|' read -r "R[lat_n]" "R[lat_p50]" "R[lat_p90]" "R[lat_p99]" "R[lat_max]" "R[lat_min]" \
		"R[lat_done_p50]" "R[lat_done_p99]" <<<"$line"
	((R[lat_n] == n)) || die "latency: only ${R[lat_n]} of $n runs have a commit timestamp and a step start"

	printf '  commit of wf_start -> step started_at (ms, %s runs):\n' "${R[lat_n]}"
	printf '  %-10s %-10s %-10s %-10s %-10s\n' p50 p90 p99 max min
	printf '  %-10s %-10s %-10s %-10s %-10s\n' "${R[lat_p50]}" "${R[lat_p90]}" "${R[lat_p99]}" "${R[lat_max]}" "${R[lat_min]}"
	printf '  %-44s p50 %s ms, p99 %s ms\n' "commit -> run finished_at" "${R[lat_done_p50]}" "${R[lat_done_p99]}"
	printf '  %-44s %s ms\n' "client round trip (wf_start + wf_wait), avg" "${R[lat_client_avg]:-?}"
}

measure_yardstick() {
	section "3. Yardstick: pgbench, 1 client, ${PGBENCH_SECONDS} s, one-row INSERT per transaction"
	if ! run_child pgbench_run -n -c 1 -T "$PGBENCH_SECONDS" -f "$BENCH_DIR/yardstick.sql" >"$WORK/yardstick.log" 2>&1; then
		cat "$WORK/yardstick.log" >&2
		die "pgbench (yardstick) failed"
	fi
	R[pgb_tps]=$(awk '/^tps = / { printf "%.0f", $3 }' "$WORK/yardstick.log")
	R[pgb_lat]=$(awk '/^latency average/ { print $4 }' "$WORK/yardstick.log")
	[[ -n "${R[pgb_tps]}" ]] || die "could not read tps from pgbench's output ($WORK/yardstick.log)"
	R[ratio]=$(fmt '%.2f' "$(awk -v a="${R[tp_steps_per_s]}" -v b="${R[pgb_tps]}" 'BEGIN { print a / b }')")
	printf '  %-44s %s tps (latency avg %s ms)\n' "pgbench" "${R[pgb_tps]}" "${R[pgb_lat]}"
	printf '  %-44s %s steps/s / %s tps = %s\n' "ratio pg_workflow / pgbench" \
		"${R[tp_steps_per_s]}" "${R[pgb_tps]}" "${R[ratio]}"
}

# Sum of voluntary + involuntary context switches, and CPU ticks, of pids.
proc_counters() {
	local pid cs=0 ticks=0 a b
	for pid in "$@"; do
		[[ -r "/proc/$pid/status" ]] || continue
		a=$(awk '/ctxt_switches/ { s += $2 } END { print s + 0 }' "/proc/$pid/status")
		b=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
		cs=$((cs + a))
		ticks=$((ticks + b))
	done
	echo "$cs $ticks"
}

measure_idle() {
	local unfinished pids x0 x1 c0 c1 t0 t1 clk i busy window_start
	section "4. Idle cost: ${IDLE_SECONDS} s with nothing to do"
	unfinished=$(q -c "SELECT count(*) FROM wf.run WHERE status IN ('pending', 'running', 'waiting')")
	((unfinished == 0)) || die "$unfinished runs are still unfinished before the idle test"
	# Leave autovacuum nothing to do during the window.
	q -c "VACUUM (ANALYZE)" >/dev/null

	# Our own sessions to database postgres must be gone (their statistics
	# are flushed when they exit); from now on we only query the observer's
	# database, so neither counter below includes our queries.
	for ((i = 0; i < 100; i++)); do
		busy=$(qobs -c "SELECT count(*) FROM pg_stat_activity
						 WHERE datname = 'postgres' AND backend_type = 'client backend'")
		((busy == 0)) && break
		sleep 0.1
	done
	mapfile -t pids < <(qobs -c "SELECT pid FROM pg_stat_activity
								  WHERE backend_type = 'pg_workflow executor'")

	window_start=$(qobs -c "SELECT pg_stat_statements_reset(); SELECT clock_timestamp()" | tail -n 1)
	x0=$(qobs -c "SELECT xact_commit FROM pg_stat_database WHERE datname = 'postgres'")
	read -r c0 t0 <<<"$(proc_counters "${pids[@]}")"

	run_child sleep "$IDLE_SECONDS"

	read -r c1 t1 <<<"$(proc_counters "${pids[@]}")"
	x1=$(qobs -c "SELECT xact_commit FROM pg_stat_database WHERE datname = 'postgres'")
	R[idle_stmts]=$(qobs -c "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements
							  WHERE dbid <> (SELECT oid FROM pg_database WHERE datname = current_database())")
	R[idle_xacts]=$((x1 - x0))
	R[idle_wakeups]=$((c1 - c0))
	clk=$(getconf CLK_TCK 2>/dev/null || echo 100)
	R[idle_cpu_ms]=$(((t1 - t0) * 1000 / clk))

	printf '  %-52s %s\n' "statements run by the executors (pg_stat_statements)" "${R[idle_stmts]}"
	printf '  %-52s %s (xact_commit %s -> %s; our own: 0)\n' \
		"transactions committed in db postgres" "${R[idle_xacts]}" "$x0" "$x1"
	printf '  %-52s %s (%s executors)\n' "executor context switches (wake-ups)" "${R[idle_wakeups]}" "${#pids[@]}"
	printf '  %-52s %s ms\n' "executor CPU time" "${R[idle_cpu_ms]}"
	if ((R[idle_stmts] > 0)); then
		printf '  statements seen:\n'
		qobs -F '|' -c "SELECT calls, left(regexp_replace(query, '\s+', ' ', 'g'), 90)
						 FROM pg_stat_statements
						WHERE dbid <> (SELECT oid FROM pg_database WHERE datname = current_database())
						ORDER BY calls DESC LIMIT 10" | sed 's/^/    /'
	fi
	# Back in database postgres, after the window: did autovacuum interfere?
	if [[ "$(q -c "SELECT count(*) FROM pg_stat_all_tables
					WHERE greatest(last_autovacuum, last_autoanalyze) >= '$window_start'")" != 0 ]]; then
		printf '  note: autovacuum ran in db postgres during the window; its transactions are counted above\n'
	fi
	if ((R[stat_step_upd] < R[stat_step_upd_expected] / 2)); then
		printf '  note: the executors do not report their activity to the statistics system\n'
		printf '        (wf.step n_tup_upd = %s after at least %s step updates), so\n' \
			"${R[stat_step_upd]}" "${R[stat_step_upd_expected]}"
		printf '        pg_stat_database cannot see their transactions: rely on the\n'
		printf '        statement count and the wake-ups above.\n'
	fi
}

print_summary() {
	local ok
	section "Summary (workers = $WORKERS$( ((QUICK)) && echo ', QUICK mode'))"
	cols "figure" "value" "target" "result"
	ok=$(awk -v a="${R[tp_steps_per_s]}" -v b="${R[pgb_tps]}" 'BEGIN { print (a >= b) }')
	row "throughput (steps/s)" "${R[tp_steps_per_s]}" ">= ${R[pgb_tps]} (pgbench tps)" "$ok"
	row "  ratio to pgbench 1-client tps" "${R[ratio]}" ">= 1" "$ok"
	ok=$(awk -v a="${R[ratio]}" 'BEGIN { print (a >= 1.5) }')
	row "  same, issue 10's target" "${R[ratio]}" ">= 1.5" "$ok"
	ok=$(awk -v a="${R[tp_cpu_us]}" 'BEGIN { print (a <= 250) }')
	row "executor CPU per sql step (us)" "${R[tp_cpu_us]}" "<= 250" "$ok"
	row "wall time, $THROUGHPUT_RUNS runs (ms)" "${R[tp_wall_ms]}" "" -
	ok=$(awk -v a="${R[lat_p50]}" 'BEGIN { print (a < 2) }')
	row "latency p50 (ms)" "${R[lat_p50]}" "< 2" "$ok"
	row "latency p90 (ms)" "${R[lat_p90]}" "" -
	ok=$(awk -v a="${R[lat_p99]}" 'BEGIN { print (a < 10) }')
	row "latency p99 (ms)" "${R[lat_p99]}" "< 10" "$ok"
	row "latency max (ms)" "${R[lat_max]}" "" -
	row "idle statements (${IDLE_SECONDS} s)" "${R[idle_stmts]}" "= 0" "$((R[idle_stmts] == 0))"
	row "idle transactions (${IDLE_SECONDS} s)" "${R[idle_xacts]}" "= 0" "$((R[idle_xacts] == 0))"
	row "idle executor wake-ups (${IDLE_SECONDS} s)" "${R[idle_wakeups]}" "= 0" "$((R[idle_wakeups] == 0))"
	print_load_end
}

main() {
	parse_args "$@"
	find_bindir initdb pg_ctl psql pgbench
	set_traps

	printf 'pg_workflow benchmark -- %s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
	start_server
	setup_database
	wait_for_executors
	print_machine
	warm_up
	measure_throughput
	measure_latency
	measure_yardstick
	measure_idle
	print_summary
}

main "$@"
