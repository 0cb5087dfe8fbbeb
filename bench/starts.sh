#!/usr/bin/env bash
# bench/starts.sh -- concurrent starts: runs started one per call by 10
# clients at once, as applications and triggers start them.  On a throwaway
# PostgreSQL 15 server (default port 5496, Unix socket only, default
# settings: fsync and synchronous_commit on, 2 executors) it measures:
#   1. yardstick -- pgbench, 1 client, one-row INSERT per transaction (tps);
#   2. starts    -- N autocommit wf_start('noop3') (3 no-op sql steps) from
#                   10 pgbench clients, the executors running them meanwhile:
#                   starts/s and its ratio to the yardstick, wf_start's
#                   server time (pg_stat_statements), commit of wf_start ->
#                   first step started p50/p99, runs/s from the first start
#                   to the last finish, WAL and server CPU per workflow;
# prints each figure beside its target and stops the server (also on
# failure or interrupt).
#
# Usage: bench/starts.sh [--quick] [--runs N] [--port P] [--keep]
#   --quick   1,000 runs, 2 s of yardstick: a smoke test, not figures
#   --runs N  runs started (default 10000; a multiple of 10)
#   --port P  server port (default 5496)
#   --keep    leave the server running at the end (the directory keeps w0
#             and w1, the WAL positions around the starts, for pg_waldump)
#
# Run as root (server programs then run as user postgres through runuser)
# or as the user that should own the cluster; needs what bench/run.sh needs.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$BENCH_DIR/lib.sh"

LOG_TAG=starts
WORK_PREFIX=/tmp/pgwf-starts
SERVER_CONF=(
	"shared_preload_libraries = 'pg_workflow, pg_stat_statements'"
	"track_commit_timestamp = on"
)
ROW_WIDTHS=(44 14 22)

PORT=5496
WORKERS=2
KEEP=0
QUICK=0
RUNS=10000
CLIENTS=10
PGBENCH_SECONDS=10
WARMUP_RUNS=200
WAIT_LIMIT_S=900
TAG=pgwf-starts
declare -A R=()

while (($# > 0)); do
	case "$1" in
	--quick)
		QUICK=1
		RUNS=1000
		PGBENCH_SECONDS=2
		WARMUP_RUNS=50
		;;
	--keep) KEEP=1 ;;
	--runs) RUNS=$2; shift ;;
	--port) PORT=$2; shift ;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; die "unknown option '$1'" ;;
	esac
	shift
done
posint "$RUNS" && ((RUNS % CLIENTS == 0)) || die "--runs must be a positive multiple of $CLIENTS"

# CPU of every server process, in ns (/proc/PID/schedstat).
server_cpu() {
	local pids
	mapfile -t pids < <(pgrep -u postgres -f "postgres" || true)
	sched_of "${pids[@]}" | awk '{ print $1 }'
}

wal_lsn() { q -c "SELECT pg_current_wal_insert_lsn() /* $TAG */"; }

part_yardstick() {
	section "1. Yardstick: pgbench, 1 client, ${PGBENCH_SECONDS} s, one-row INSERT per transaction"
	run_child pgbench_run -n -c 1 -T "$PGBENCH_SECONDS" -f "$BENCH_DIR/yardstick.sql" \
		>"$WORK/yardstick.log" 2>&1 || { cat "$WORK/yardstick.log" >&2; die "pgbench (yardstick) failed"; }
	R[pgb_tps]=$(awk '/^tps = / { printf "%.0f", $3 }' "$WORK/yardstick.log")
	[[ -n "${R[pgb_tps]}" ]] || die "could not read tps from $WORK/yardstick.log"
	printf '  %-44s %s tps\n' "pgbench" "${R[pgb_tps]}"
}

warm_up() {
	local lo hi
	log "warm-up: $WARMUP_RUNS runs of noop3 from $CLIENTS clients (not measured)"
	lo=$(max_run_id)
	pgbench_run -n -c "$CLIENTS" -j 2 -t $((WARMUP_RUNS / CLIENTS)) -f "$BENCH_DIR/start3.sql" \
		>"$WORK/warmup.log" 2>&1 || { cat "$WORK/warmup.log" >&2; die "pgbench (warm-up) failed"; }
	hi=$(max_run_id)
	wait_for_runs "$lo" "$hi"
	check_completed "$lo" "$hi" "warm-up"
}

part_starts() {
	local lo hi w0 w1 c0 c1 line
	section "2. Starts: $RUNS autocommit wf_start('noop3') from $CLIENTS clients, one per call"
	q -c "SELECT pg_stat_statements_reset()" >/dev/null
	lo=$(max_run_id)
	w0=$(wal_lsn)
	echo "$w0" >"$WORK/w0"
	c0=$(server_cpu)
	run_child pgbench_run -n -c "$CLIENTS" -j 2 -t $((RUNS / CLIENTS)) -f "$BENCH_DIR/start3.sql" \
		>"$WORK/starts.log" 2>&1 || { cat "$WORK/starts.log" >&2; die "pgbench (starts) failed"; }
	hi=$(max_run_id)
	((hi - lo == RUNS)) || die "expected $RUNS new runs, found $((hi - lo))"
	wait_for_runs "$lo" "$hi"
	c1=$(server_cpu)
	w1=$(wal_lsn)
	echo "$w1" >"$WORK/w1"
	check_completed "$lo" "$hi" "starts"

	R[start_tps]=$(awk '/^tps = / { printf "%.0f", $3 }' "$WORK/starts.log")
	R[start_ratio]=$(fmt '%.2f' "$(awk -v a="${R[start_tps]}" -v b="${R[pgb_tps]}" 'BEGIN { print a / b }')")
	R[start_ms]=$(q -c "SELECT round(mean_exec_time::numeric, 3) FROM pg_stat_statements
						 WHERE query = 'SELECT wf_start(\$1)' AND toplevel /* $TAG */")
	R[wal_b]=$(q -c "SELECT round(pg_wal_lsn_diff('$w1', '$w0') / $RUNS) /* $TAG */")
	R[cpu_us]=$(fmt '%.0f' "$(awk -v c=$((c1 - c0)) -v n="$RUNS" 'BEGIN { print c / 1000 / n }')")
	line=$(q -F '|' -c "/* $TAG */
		$(latency_cte "$lo" "$hi")
		SELECT count(ms),
			   round(percentile_cont(0.50) WITHIN GROUP (ORDER BY ms)::numeric, 2),
			   round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 2),
			   round($RUNS / extract(epoch FROM (SELECT max(finished_at) - min(created_at)
												   FROM wf.run WHERE id > $lo AND id <= $hi)))
		  FROM l")
	IFS='|' read -r R[lat_n] R[lat_p50] R[lat_p99] R[runs_s] <<<"$line"
	((R[lat_n] == RUNS)) || die "only ${R[lat_n]} of $RUNS runs have a commit timestamp and a step start"

	printf '  %-44s %s starts/s (%s x the yardstick)\n' "pgbench, $CLIENTS clients" "${R[start_tps]}" "${R[start_ratio]}"
	printf '  %-44s %s ms\n' "wf_start, server time (mean)" "${R[start_ms]}"
	printf '  %-44s p50 %s ms, p99 %s ms\n' "commit of wf_start -> first step started" "${R[lat_p50]}" "${R[lat_p99]}"
	printf '  %-44s %s runs/s (%s steps/s)\n' "first start -> last run finished" "${R[runs_s]}" $((R[runs_s] * 3))
	printf '  %-44s %s B per workflow\n' "WAL" "${R[wal_b]}"
	printf '  %-44s %s us per workflow\n' "server CPU (all processes)" "${R[cpu_us]}"

	printf '\n  Top statements (pg_stat_statements, top level):\n'
	q -F '|' -c "
		SELECT to_char(calls, 'FM9999999'), to_char(mean_exec_time * 1000, 'FM9999990'),
			   left(regexp_replace(query, '\s+', ' ', 'g'), 70)
		  FROM pg_stat_statements
		 WHERE toplevel AND query NOT LIKE '%$TAG%' AND query NOT LIKE '%pg_stat_statements%'
		 ORDER BY total_exec_time DESC LIMIT 8" |
		awk -F'|' 'BEGIN { printf "  %8s %8s  %s\n", "calls", "mean us", "query" }
			{ printf "  %8s %8s  %s\n", $1, $2, $3 }'
}

main() {
	find_bindir initdb pg_ctl psql pgbench
	set_traps
	printf 'pg_workflow concurrent-starts benchmark -- %s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
	start_server
	q -f "$BENCH_DIR/setup.sql" >/dev/null
	wait_for_executors
	machine_head ""
	machine_tail
	part_yardstick
	warm_up
	part_starts
	section "Summary (workers = $WORKERS, $CLIENTS clients)"
	cols "figure" "value" "target" "result"
	row "starts/s / yardstick tps" "${R[start_ratio]}" ">= 1.0" \
		"$(awk -v a="${R[start_ratio]}" 'BEGIN { print (a >= 1.0) }')"
	row "wf_start server time (ms)" "${R[start_ms]}" "<= 0.3" \
		"$(awk -v a="${R[start_ms]}" 'BEGIN { print (a <= 0.3) }')"
	row "start -> first step p50 (ms)" "${R[lat_p50]}" "<= 2" \
		"$(awk -v a="${R[lat_p50]}" 'BEGIN { print (a <= 2) }')"
	row "start -> first step p99 (ms)" "${R[lat_p99]}" "<= 5" \
		"$(awk -v a="${R[lat_p99]}" 'BEGIN { print (a <= 5) }')"
	row "WAL per 3-step workflow (B)" "${R[wal_b]}" "<= 3500" \
		"$(awk -v a="${R[wal_b]}" 'BEGIN { print (a <= 3500) }')"
	row "server CPU per workflow (us)" "${R[cpu_us]}" "" -
	row "runs/s, first start -> last finish" "${R[runs_s]}" "" -
	print_load_end
}

main "$@"
