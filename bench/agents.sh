#!/usr/bin/env bash
# bench/agents.sh -- external agents: how fast do tasks go through, and
# where do they go?  On a throwaway PostgreSQL 15 server (default port 5494,
# Unix socket only, default pg_workflow settings: 2 executors) it measures:
#   1. throughput -- 2,000 runs of 3 agent steps (pool "bench") started in
#                    one transaction, worked by 4 processes of the example
#                    agent (examples/agents/agent.py or agent.js: claim with wait,
#                    complete): steps/s, claim -> complete p50/p99, and the
#                    CPU of the server's processes per step;
#   2. balance    -- tasks of 50 ms started at 40 per second for 10 s,
#                    worked by agent "A" (3 processes, capacity 3) and
#                    agent "B" (1 process, capacity 1): the share of each;
# prints a report and stops the server (also on failure or interrupt).
#
# Usage: bench/agents.sh [--quick] [--runs N] [--port P] [--keep]
#   --quick   200 runs, 3 s of balance: a smoke test, not figures
#   --runs N  runs of the throughput part (default 2000)
#   --lang L  the example agent: py (agent.py, default) or js (agent.js;
#             run npm ci in examples/agents first)
#   --port P  server port (default 5494)
#   --keep    leave the server running at the end
#
# Run as root (server programs then run as user postgres through runuser)
# or as the user that should own the cluster. Needs python3 with psycopg 3
# (Debian: python3-psycopg) besides what bench/run.sh needs.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$BENCH_DIR/lib.sh"

LOG_TAG=agents
WORK_PREFIX=/tmp/pgwf-agents
SERVER_CONF=(
	"shared_preload_libraries = 'pg_workflow'"
	"track_commit_timestamp = on"
)
ROW_WIDTHS=(46 16 20)
AGENTS_DIR=$BENCH_DIR/../examples/agents
PY=${PYTHON:-/usr/bin/python3}
NODE=${NODE:-node}
LANG_AGENT=py

PORT=5494
WORKERS=2
KEEP=0
QUICK=0
RUNS=2000
BALANCE_S=10
BALANCE_RATE=40
WAIT_LIMIT_S=900
TAG=pgwf-agents
AGENT_PIDS=()
declare -A R=()

while (($# > 0)); do
	case "$1" in
	--quick) QUICK=1 ;;
	--keep) KEEP=1 ;;
	--runs) RUNS=$2; shift ;;
	--lang) LANG_AGENT=$2; shift ;;
	--port) PORT=$2; shift ;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; die "unknown option '$1'" ;;
	esac
	shift
done
posint "$RUNS" || die "--runs must be a positive integer"
if ((QUICK)); then
	RUNS=200
	BALANCE_S=3
fi

cleanup_children() {
	local pid
	stop_pid TERM "$CHILD_PID"
	for pid in "${AGENT_PIDS[@]}"; do
		stop_pid TERM "$pid"
	done
	AGENT_PIDS=()
}

# start_agent NAME [CAPACITY]: one process of the example agent.
start_agent() {
	local -a cmd
	if [[ "$LANG_AGENT" == js ]]; then
		cmd=("$NODE" "$AGENTS_DIR/agent.js" --dsn "postgresql://bench_agent@/postgres?host=$WORK&port=$PORT")
	else
		cmd=("$PY" "$AGENTS_DIR/agent.py" --dsn "host=$WORK port=$PORT dbname=postgres user=bench_agent")
	fi
	"${cmd[@]}" --pool bench --agent "$1" ${2:+--capacity "$2"} \
		--wait '2 seconds' --lease '1 minute' >>"$WORK/agent.$1.log" 2>&1 &
	AGENT_PIDS+=($!)
}

stop_agents() {
	cleanup_children
}

# CPU of every server process, in ns (/proc/PID/schedstat).
server_cpu() {
	local pids
	mapfile -t pids < <(pgrep -u postgres -f "postgres" || true)
	sched_of "${pids[@]}" | awk '{ print $1 }'
}

part_throughput() {
	local lo hi c0 c1 line
	section "Throughput: $RUNS runs of 3 agent steps, 4 agent processes"
	for i in 1 2 3 4; do start_agent "a$i"; done
	sleep 1
	lo=$(max_run_id)
	c0=$(server_cpu)
	q -c "SELECT count(wf_start('agents3')) FROM generate_series(1, $RUNS)" >/dev/null
	hi=$(max_run_id)
	wait_for_runs "$lo" "$hi"
	c1=$(server_cpu)
	check_completed "$lo" "$hi" "throughput"
	stop_agents
	line=$(q -F '|' -c "/* $TAG */
		WITH t AS (SELECT * FROM wf.task WHERE run_id > $lo AND run_id <= $hi AND state = 'completed'),
		s AS (SELECT * FROM wf.step WHERE run_id > $lo AND run_id <= $hi)
		SELECT (SELECT count(*) FROM s WHERE status = 'completed'),
			   round(extract(epoch FROM (SELECT max(finished_at) - min(started_at) FROM s)) * 1000),
			   round((percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - claimed_at)) * 1000)::numeric, 2),
			   round((percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - claimed_at)) * 1000)::numeric, 2),
			   round((percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM claimed_at - created_at)) * 1000)::numeric, 2)
		  FROM t")
	IFS='|' read -r R[steps] R[window_ms] R[cc_p50] R[cc_p99] R[ready_claim_p50] <<<"$line"
	R[steps_s]=$(fmt '%.0f' "$(awk -v s="${R[steps]}" -v w="${R[window_ms]}" 'BEGIN { print s / (w / 1000) }')")
	R[cpu_us]=$(fmt '%.0f' "$(awk -v c=$((c1 - c0)) -v s="${R[steps]}" 'BEGIN { print c / 1000 / s }')")
	printf '  %-44s %s steps in %s ms: %s steps/s\n' "agent steps" "${R[steps]}" "${R[window_ms]}" "${R[steps_s]}"
	printf '  %-44s p50 %s ms, p99 %s ms\n' "claim -> complete" "${R[cc_p50]}" "${R[cc_p99]}"
	printf '  %-44s p50 %s ms\n' "task created -> claimed" "${R[ready_claim_p50]}"
	printf '  %-44s %s us per step (server processes)\n' "CPU" "${R[cpu_us]}"
}

part_balance() {
	local lo hi n line
	section "Balance: tasks of 50 ms at $BALANCE_RATE/s for $BALANCE_S s; agent A (3 processes, capacity 3), B (1, capacity 1)"
	for i in 1 2 3; do start_agent A 3; done
	start_agent B 1
	sleep 1
	lo=$(max_run_id)
	n=$((BALANCE_RATE * BALANCE_S))
	pgbench_run -n -c 1 -R "$BALANCE_RATE" -t "$n" -f "$BENCH_DIR/agents_start.sql" \
		>"$WORK/balance.pgbench.log" 2>&1
	hi=$(max_run_id)
	wait_for_runs "$lo" "$hi"
	check_completed "$lo" "$hi" "balance"
	stop_agents
	line=$(q -F '|' -c "/* $TAG */
		SELECT count(*) FILTER (WHERE agent = 'A'), count(*) FILTER (WHERE agent = 'B'), count(*)
		  FROM wf.task WHERE run_id > $lo AND run_id <= $hi AND state = 'completed'")
	IFS='|' read -r R[bal_a] R[bal_b] R[bal_n] <<<"$line"
	R[bal_a_pct]=$(fmt '%.1f' "$(awk -v a="${R[bal_a]}" -v n="${R[bal_n]}" 'BEGIN { print 100 * a / n }')")
	printf '  %-44s A %s (%s %%), B %s, of %s\n' "tasks completed by" "${R[bal_a]}" "${R[bal_a_pct]}" "${R[bal_b]}" "${R[bal_n]}"
}

main() {
	find_bindir initdb pg_ctl psql pgbench
	if [[ "$LANG_AGENT" == js ]]; then
		[[ -d "$AGENTS_DIR/node_modules/pg" ]] || die "examples/agents has no node_modules/pg (npm ci there)"
	else
		"$PY" -c 'import psycopg' 2>/dev/null || die "$PY has no psycopg (apt-get install python3-psycopg)"
	fi
	set_traps
	printf 'pg_workflow agents benchmark -- %s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
	start_server
	q -f "$BENCH_DIR/agents.sql" >/dev/null
	wait_for_executors
	machine_head ""
	machine_tail
	part_throughput
	part_balance
	section "Summary (workers = $WORKERS)"
	cols "figure" "value" "target" "result"
	row "agent steps/s (4 agent processes)" "${R[steps_s]}" ">= 2000 (4 x 500)" \
		"$(awk -v a="${R[steps_s]}" 'BEGIN { print (a >= 2000) }')"
	row "claim -> complete p50 / p99 (ms)" "${R[cc_p50]} / ${R[cc_p99]}" "" -
	row "server CPU per agent step (us)" "${R[cpu_us]}" "" -
	row "balance: A's share (capacity 3 of 4)" "${R[bal_a_pct]} %" "" -
	print_load_end
}

main "$@"
