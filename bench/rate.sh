#!/usr/bin/env bash
# bench/rate.sh -- does a rate limit hold against the server's clock?  On a
# throwaway PostgreSQL 15 server (default port 5495, default pg_workflow
# settings: 2 executors) it starts N runs (default 1,000) of one http step
# to test/http_server.py on 127.0.0.1, under "rate_limit": {"limit": L,
# "per": "1 minute"} (default L = 100), all in one transaction, and reads
# the arrival times the HTTP server logged: the most requests in any 60 s
# window (must be <= L), the rate after the first burst (the bucket starts
# full: L requests go at once, then L a minute) and the requests per
# consecutive minute from the first.
#
# Usage: bench/rate.sh [--quick] [--steps N] [--limit L] [--port P] [--http-port P] [--keep]
#   --quick   200 steps under a limit of 100 (about 1 minute)
#
# Run as root (server programs then run as user postgres through runuser)
# or as the user that should own the cluster. 1,000 steps at 100 a minute
# take about 9 minutes.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$BENCH_DIR/lib.sh"

LOG_TAG=rate
WORK_PREFIX=/tmp/pgwf-rate
SERVER_CONF=("shared_preload_libraries = 'pg_workflow'")
ROW_WIDTHS=(46 16 20)
PY=${PYTHON:-/usr/bin/python3}

PORT=5495
HTTP_PORT=8495
WORKERS=2
KEEP=0
QUICK=0
STEPS=1000
LIMIT=100
WAIT_LIMIT_S=1800
TAG=pgwf-rate
HTTP_PID=

while (($# > 0)); do
	case "$1" in
	--quick) QUICK=1; STEPS=200 ;;
	--keep) KEEP=1 ;;
	--steps) STEPS=$2; shift ;;
	--limit) LIMIT=$2; shift ;;
	--port) PORT=$2; shift ;;
	--http-port) HTTP_PORT=$2; shift ;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; die "unknown option '$1'" ;;
	esac
	shift
done
posint "$STEPS" && posint "$LIMIT" || die "--steps and --limit must be positive integers"

cleanup_children() {
	stop_pid TERM "$CHILD_PID"
	stop_pid TERM "$HTTP_PID"
}

main() {
	local lo hi url
	find_bindir initdb pg_ctl psql
	set_traps
	printf 'pg_workflow rate-limit benchmark -- %s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
	start_server
	q -c "CREATE EXTENSION pg_workflow" >/dev/null
	"$PY" "$BENCH_DIR/../test/http_server.py" --port "$HTTP_PORT" --log-limit 0 \
		>"$WORK/http.log" 2>&1 &
	HTTP_PID=$!
	url="http://127.0.0.1:$HTTP_PORT"
	for _ in $(seq 100); do
		curl -sf "$url/_stats" >/dev/null 2>&1 && break
		sleep 0.1
	done
	curl -sf "$url/_stats" >/dev/null || die "the HTTP server did not start (log: $WORK/http.log)"
	wait_for_executors
	machine_head ""
	machine_tail
	q -c "SELECT wf_define('rated', jsonb_build_object('steps', jsonb_build_array(
			jsonb_build_object('name', 'call', 'http', jsonb_build_object('url', '$url/echo?i={{\$.input.i}}'),
							   'rate_limit', jsonb_build_object('limit', $LIMIT, 'per', '1 minute')))))" >/dev/null

	section "$STEPS http steps under a limit of $LIMIT per minute"
	lo=$(max_run_id)
	q -c "SELECT count(wf_start('rated', jsonb_build_object('i', g))) FROM generate_series(1, $STEPS) g" >/dev/null
	hi=$(max_run_id)
	wait_for_runs "$lo" "$hi"
	check_completed "$lo" "$hi" "rated"
	curl -sf "$url/_requests" >"$WORK/requests.json"
	"$PY" - "$WORK/requests.json" "$LIMIT" "$STEPS" <<'PY'
import json, sys
reqs = [r for r in json.load(open(sys.argv[1]))["requests"] if r.get("path", "").startswith("/echo")]
limit, steps = int(sys.argv[2]), int(sys.argv[3])
t = sorted(r["at"] for r in reqs)
if len(t) != steps:
    sys.exit(f"the server saw {len(t)} requests, not {steps}")
worst, j = 0, 0
for i in range(len(t)):
    while t[i] - t[j] >= 60.0:
        j += 1
    worst = max(worst, i - j + 1)
burst = sum(1 for x in t if x - t[0] < 1.0)       # the bucket is full at the start
# Past the first burst, the sustained rate: what went after it, over the time
# it took (grants age out of the window one by one, so requests go in bursts
# of up to L once a window; rates between two such bursts mean nothing).
rate = (len(t) - burst) / (t[-1] - t[0]) * 60 if t[-1] > t[0] else float("nan")
per_min = [sum(1 for x in t if m * 60 <= x - t[0] < (m + 1) * 60) for m in range(int((t[-1] - t[0]) // 60) + 1)]
print(f"  {'requests seen by the server':<44} {len(t)}")
print(f"  {'first burst (bucket full at the start)':<44} {burst}")
print(f"  {'most requests in any 60 s window':<44} {worst}   (limit {limit}: {'ok' if worst <= limit else 'EXCEEDED'})")
print(f"  {'sustained rate past the burst, per minute':<44} {rate:.1f}   (target {limit} +- 2: {'ok' if abs(rate - limit) <= 2 else 'off'})")
print(f"  {'requests per minute from the first':<44} {' '.join(map(str, per_min))}")
print(f"  {'first to last request':<44} {t[-1] - t[0]:.1f} s")
PY
}

main "$@"
