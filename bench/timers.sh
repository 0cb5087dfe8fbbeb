#!/usr/bin/env bash
# timers.sh -- how late do sleeping runs wake, and what do they cost while
# they sleep?
#
# Starts a throwaway server (scripts/pgwf-server.sh) and a one-step workflow
# {"sleep": {"until": "{{$.input.at}}"}}, then:
#   1. N runs asleep for an hour: during 5 s, the statements the executors
#      run (pg_stat_statements), their wake-ups (voluntary context switches)
#      and their CPU time (/proc);
#   2. N more runs whose wake-up times are spread over S seconds: the lag of
#      each, finished_at of its step minus its "at" (p50, p99, max);
#   with --restart, an immediate stop and restart between the two.
#
# Usage: bench/timers.sh [--runs N] [--spread S] [--workers W] [--restart] [--keep]
# Defaults: 2000 runs over 10 s, 2 executors. Run as root or as postgres.
# Target (issue "flow control"): no query while asleep, each run woken
# within 100 ms of its time.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SERVER="$REPO/scripts/pgwf-server.sh"
RUNS=2000
SPREAD=10
WORKERS=2
RESTART=false
KEEP=false
PORT=5495
DIR=""

log() { printf '[timers] %s\n' "$*" >&2; }
die() { printf '[timers] ERROR: %s\n' "$*" >&2; exit 1; }

while (($# > 0)); do
	case "$1" in
		--runs) RUNS=$2; shift 2 ;;
		--spread) SPREAD=$2; shift 2 ;;
		--workers) WORKERS=$2; shift 2 ;;
		--restart) RESTART=true; shift ;;
		--keep) KEEP=true; shift ;;
		-h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
		*) die "unknown option $1 (see --help)" ;;
	esac
done

q() { bash "$SERVER" psql "$DIR" "$PORT" -X -q -At -v ON_ERROR_STOP=1 -c "$1"; }

cleanup() {
	if [[ -n "$DIR" && "$KEEP" == false ]]; then
		bash "$SERVER" destroy "$DIR" >/dev/null 2>&1 || true
	fi
}
trap cleanup EXIT

executor_cpu_ms() {
	local total=0 pid ticks
	for pid in $(q "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_workflow executor'"); do
		ticks=$(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || echo 0)
		total=$((total + ticks))
	done
	echo $((total * 1000 / $(getconf CLK_TCK)))
}

# Voluntary context switches of the executors: each wake-up is one.
executor_wakeups() {
	local total=0 pid n
	for pid in $(q "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_workflow executor'"); do
		n=$(awk '/^voluntary_ctxt_switches/ { print $2 }' "/proc/$pid/status" 2>/dev/null || echo 0)
		total=$((total + n))
	done
	echo "$total"
}

DIR=$(mktemp -d /tmp/pgwf-timers.XXXXXX)
chmod 755 "$DIR"
DIR="$DIR/data"
log "starting a server in $DIR on port $PORT ($WORKERS executors)"
bash "$SERVER" start "$DIR" "$PORT" "pg_workflow.workers = $WORKERS" \
	"shared_preload_libraries = 'pg_workflow, pg_stat_statements'" \
	"pg_stat_statements.track = all" >/dev/null
q "CREATE EXTENSION pg_stat_statements" >/dev/null
q "SELECT wf_define('nap', '{\"steps\": [{\"name\": \"nap\", \"sleep\": {\"until\": \"{{\$.input.at}}\"}}]}')" >/dev/null

log "phase 1: $RUNS runs asleep for an hour: what do they cost?"
q "SELECT count(wf_start('nap', jsonb_build_object('at', clock_timestamp() + interval '1 hour')))
     FROM generate_series(1, $RUNS)" >/dev/null
until [[ $(q "SELECT count(*) FROM wf.steps WHERE status = 'waiting'") -ge $RUNS ]]; do sleep 0.1; done
sleep 1
q "SELECT pg_stat_statements_reset()" >/dev/null
cpu0=$(executor_cpu_ms)
wake0=$(executor_wakeups)
sleep 5
cpu1=$(executor_cpu_ms)
wake1=$(executor_wakeups)
stmts=$(q "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements
            WHERE query NOT LIKE '%pg_stat%'")

if [[ "$RESTART" == true ]]; then
	log "restarting the server (immediate stop) while they sleep"
	bash "$SERVER" stop "$DIR" immediate >/dev/null
	bash "$SERVER" start "$DIR" "$PORT" "pg_workflow.workers = $WORKERS" \
		"shared_preload_libraries = 'pg_workflow, pg_stat_statements'" \
		"pg_stat_statements.track = all" >/dev/null
fi

OFFSET=$((5 + RUNS / 1000))
log "phase 2: $RUNS more runs waking over $SPREAD s, from $OFFSET s on"
q "SELECT count(wf_start('nap', jsonb_build_object('lag', true, 'at', clock_timestamp() + interval '$OFFSET s'
                                                   + i * interval '1 ms' * ($SPREAD * 1000.0 / $RUNS))))
     FROM generate_series(1, $RUNS) i" >/dev/null
until [[ $(q "SELECT count(*) FROM wf.runs WHERE input ? 'lag' AND status <> 'completed'") -eq 0 ]]; do
	sleep 0.2
done

echo "== timers: $RUNS sleeping runs over $SPREAD s, $WORKERS executors, restart: $RESTART =="
echo "machine: $(nproc) cores, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "$RUNS runs asleep, for 5 s: statements by the executors $stmts, executor wake-ups $((wake1 - wake0)), executor CPU $((cpu1 - cpu0)) ms"
q "SELECT format('wake-up lag (ms): p50 %s  p90 %s  p99 %s  max %s  early %s',
                 round(percentile_cont(0.5) WITHIN GROUP (ORDER BY lag)::numeric, 1),
                 round(percentile_cont(0.9) WITHIN GROUP (ORDER BY lag)::numeric, 1),
                 round(percentile_cont(0.99) WITHIN GROUP (ORDER BY lag)::numeric, 1),
                 round(max(lag)::numeric, 1), count(*) FILTER (WHERE lag < 0))
     FROM (SELECT extract(epoch FROM s.finished_at - (r.input->>'at')::timestamptz) * 1000 AS lag
             FROM wf.runs r JOIN wf.steps s ON s.run_id = r.id WHERE r.input ? 'lag') l"
echo "target: no statement while asleep; p99 lag < 100 ms (without restart)"
if [[ "$KEEP" == true ]]; then
	log "server kept: bash $SERVER psql $DIR $PORT"
fi
