#!/usr/bin/env bash
# bench/fairness.sh -- does one run hold up the others?  On a throwaway
# PostgreSQL 15 server (default port 5493, Unix socket only, default
# pg_workflow settings: 2 executors) it measures:
#   1. long steps  -- 10 runs of one step SELECT pg_sleep(20), then 100
#                     trivial runs started one per transaction over ~2 s:
#                     the trivial runs' created -> finished times, and how
#                     many long steps ran at once (wall time of the 10);
#   2. flood vs trickle -- role alice starts 3,000 runs of a 3-step no-op
#                     workflow in one transaction, then role bob starts 20
#                     runs one after the other: bob's created -> finished
#                     times, and how much of alice's backlog was done first;
# prints a report with each figure beside its target, and stops the server
# (also on failure or interrupt). See bench/README.md.
#
# Usage: bench/fairness.sh [--quick] [--part long|flood|all] [--workers N]
#                          [--long-sleep S] [--long-runs N] [--trivial-runs N]
#                          [--flood N] [--trickle N] [--trickle-rate R]
#                          [--port P] [--keep]
#   --quick           small counts, for smoke tests (not for figures)
#   --part P          run only part "long" or "flood" (default: all)
#   --workers N       pg_workflow.workers (default 2)
#   --long-sleep S    seconds each long step sleeps (default 20)
#   --long-runs N     long runs (default 10)
#   --trivial-runs N  trivial runs started after them (default 100, at 50/s)
#   --flood N         alice's runs (default 3000)
#   --trickle N       bob's runs (default 20)
#   --trickle-rate R  bob starts R runs per second (pgbench -R; default 0:
#                     the next as soon as the previous one has finished)
#   --keep            leave the server (and its directory) running at the end
#   --port P          server port (default 5493)
#   -h, --help        this text
#
# Run as root (server programs then run as user postgres through runuser) or
# as the user that should own the cluster. Needs bash, psql, pgbench, initdb
# and pg_ctl of PostgreSQL 15 (found with pg_config, or $PG_CONFIG) and
# pg_workflow installed (make install).
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$BENCH_DIR/lib.sh"

LOG_TAG=fairness
WORK_PREFIX=/tmp/pgwf-fairness
SERVER_CONF=(
	"shared_preload_libraries = 'pg_workflow'"
	"track_commit_timestamp = on"
)
ROW_WIDTHS=(46 12 30)

# Options.
PORT=5493
WORKERS=2
KEEP=0
QUICK=0
PERF=0
PART=all
LONG_SLEEP=20
LONG_RUNS=10
TRIVIAL_RUNS=100
TRIVIAL_RATE=50			# trivial runs started per second
FLOOD=3000
TRICKLE=20
TRICKLE_RATE=0
declare -A OPT=()

WARMUP_RUNS=50
WAIT_LIMIT_S=900
TAG=pgwf-fairness

SAMPLER_PID=

# Results.
declare -A R=()

parse_args() {
	local name
	while (($# > 0)); do
		case "$1" in
		--quick) QUICK=1 ;;
		--keep) KEEP=1 ;;
		--part | --workers | --port | --long-sleep | --long-runs | --trivial-runs | \
			--flood | --trickle | --trickle-rate)
			(($# >= 2)) || die "$1 needs a value"
			OPT[${1#--}]=$2
			shift
			;;
		--*=*)
			name=${1%%=*}
			name=${name#--}
			case "$name" in
			part | workers | port | long-sleep | long-runs | trivial-runs | flood | trickle | trickle-rate)
				OPT[$name]=${1#*=}
				;;
			*)
				usage >&2
				die "unknown option '$1'"
				;;
			esac
			;;
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
	if ((QUICK)); then
		LONG_SLEEP=2
		LONG_RUNS=4
		TRIVIAL_RUNS=20
		FLOOD=300
		TRICKLE=5
		WARMUP_RUNS=10
	fi
	for name in workers long-sleep long-runs trivial-runs flood trickle; do
		[[ -z "${OPT[$name]:-}" ]] || posint "${OPT[$name]}" || die "--$name must be a positive integer"
	done
	WORKERS=${OPT[workers]:-$WORKERS}
	LONG_SLEEP=${OPT[long-sleep]:-$LONG_SLEEP}
	LONG_RUNS=${OPT[long-runs]:-$LONG_RUNS}
	TRIVIAL_RUNS=${OPT[trivial-runs]:-$TRIVIAL_RUNS}
	FLOOD=${OPT[flood]:-$FLOOD}
	TRICKLE=${OPT[trickle]:-$TRICKLE}
	TRICKLE_RATE=${OPT[trickle-rate]:-$TRICKLE_RATE}
	[[ "$TRICKLE_RATE" =~ ^[0-9]+$ ]] || die "--trickle-rate must be a number of runs per second"
	PORT=${OPT[port]:-$PORT}
	if ! [[ "$PORT" =~ ^[0-9]+$ ]] || ((PORT < 1024 || PORT > 65535)); then
		die "--port must be in 1024..65535"
	fi
	PART=${OPT[part]:-$PART}
	case "$PART" in
	long | flood | all) ;;
	*) die "--part must be long, flood or all" ;;
	esac
}

# cleanup hook: run_child's command and the sampler.
cleanup_children() {
	stop_pid TERM "$CHILD_PID"
	stop_pid TERM "$SAMPLER_PID"
}

setup_database() {
	log "creating the extension, workflows and roles"
	q -f "$BENCH_DIR/setup.sql" >/dev/null
	q -v sleep="$LONG_SLEEP" -f "$BENCH_DIR/fairness.sql" >/dev/null
}

# A setting of pg_workflow's, or "" when this version has none of that name.
setting() { q -c "SELECT setting FROM pg_settings WHERE name = '$1'"; }

print_machine() {
	machine_head ""
	item "uptime (start)" "$(uptime)"
	machine_tail
	print_settings shared_preload_libraries track_commit_timestamp fsync \
		synchronous_commit max_worker_processes
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

# ---------------------------------------------------------------------------
# 1. Long steps
# ---------------------------------------------------------------------------

measure_long() {
	local lo hi tlo thi line t0 t1 m0 m1 limit workers
	section "1. Long steps: $LONG_RUNS runs of SELECT pg_sleep($LONG_SLEEP), then $TRIVIAL_RUNS trivial runs at $TRIVIAL_RATE/s"
	workers=$(setting pg_workflow.max_long_workers)
	R[long_workers_setting]=${workers:-none}
	R[long_threshold]=$(setting pg_workflow.long_step_threshold)
	printf '  %-50s %s\n' "pg_workflow.max_long_workers" "${workers:-(no such setting: no long-step workers)}"
	printf '  %-50s %s\n' "pg_workflow.long_step_threshold" "${R[long_threshold]:-(no such setting)}${R[long_threshold]:+ ms}"

	m0=$(machine_ticks)
	lo=$(max_run_id)
	q -c "SELECT count(wf_start('long')) FROM generate_series(1, $LONG_RUNS)" >/dev/null
	hi=$(max_run_id)
	((hi - lo == LONG_RUNS)) || die "expected $LONG_RUNS long runs, found $((hi - lo))"
	limit=$((LONG_RUNS * LONG_SLEEP * 2 + 120))
	q -c "CALL pgwf_bench_sampler($lo, $hi, $limit)" >/dev/null &
	SAMPLER_PID=$!

	# The trivial runs, one per transaction, at a fixed rate.
	t0=$(now_ms)
	if ! run_child pgbench_run -n -c 1 -R "$TRIVIAL_RATE" -t "$TRIVIAL_RUNS" \
		-f "$BENCH_DIR/start1.sql" >"$WORK/trivial.log" 2>&1; then
		cat "$WORK/trivial.log" >&2
		die "pgbench (trivial runs) failed"
	fi
	t1=$(now_ms)
	thi=$(max_run_id)
	tlo=$hi
	((thi - tlo == TRIVIAL_RUNS)) || die "expected $TRIVIAL_RUNS trivial runs, found $((thi - tlo))"
	log "trivial runs started in $((t1 - t0)) ms; waiting for them"
	wait_for_runs "$tlo" "$thi"
	check_completed "$tlo" "$thi" "trivial"
	log "waiting for the long runs (serially they would take $((LONG_RUNS * LONG_SLEEP)) s)"
	wait_for_runs "$lo" "$hi"
	m1=$(machine_ticks)
	wait "$SAMPLER_PID" || die "the sampler failed"
	SAMPLER_PID=
	check_completed "$lo" "$hi" "long"

	line=$(q -F '|' -c "
		WITH t AS (SELECT extract(epoch FROM finished_at - created_at) * 1000 AS ms
					 FROM wf.runs WHERE id > $tlo AND id <= $thi)
		SELECT round(percentile_cont(0.50) WITHIN GROUP (ORDER BY ms)::numeric, 1),
			   round(percentile_cont(0.95) WITHIN GROUP (ORDER BY ms)::numeric, 1),
			   round(max(ms)::numeric, 1),
			   count(*) FILTER (WHERE ms > 2000)
		  FROM t")
	IFS='|' read -r "R[triv_p50]" "R[triv_p95]" "R[triv_max]" "R[triv_late]" <<<"$line"

	# Long steps at once: at each step's start, how many long steps were running.
	line=$(q -F '|' -c "
		WITH s AS (SELECT s.started_at, s.finished_at FROM wf.step s
					WHERE s.run_id > $lo AND s.run_id <= $hi),
		r AS (SELECT * FROM wf.runs WHERE id > $lo AND id <= $hi)
		SELECT (SELECT max(n) FROM (SELECT (SELECT count(*) FROM s b
											 WHERE b.started_at <= a.started_at
											   AND b.finished_at > a.started_at) AS n
									  FROM s a) x),
			   round(extract(epoch FROM (SELECT max(finished_at) - min(created_at) FROM r))::numeric, 1),
			   (SELECT string_agg(to_char(extract(epoch FROM s.started_at - (SELECT min(created_at) FROM r)), 'FM990.0'),
								  ' ' ORDER BY s.started_at) FROM s),
			   (SELECT max(long_workers) FROM pgwf_bench_sample),
			   (SELECT max(sleeping) FROM pgwf_bench_sample),
			   (SELECT max(exec_sleeping) FROM pgwf_bench_sample),
			   (SELECT count(*) FROM pgwf_bench_sample),
			   (SELECT sum(attempt) FROM wf.step WHERE run_id > $lo AND run_id <= $hi)")
	IFS='|' read -r "R[long_overlap]" "R[long_wall]" "R[long_starts]" "R[long_workers_max]" \
		"R[long_sleeping_max]" "R[long_exec_sleeping_max]" "R[long_samples]" "R[long_attempts]" <<<"$line"
	R[long_busy]=$(busy_pct "$m0" "$m1")

	# What the target allows: waves of max_long_workers steps.
	R[long_parallel_target]=$(( ${workers:-4} < LONG_RUNS ? ${workers:-4} : LONG_RUNS ))
	R[long_waves]=$(((LONG_RUNS + R[long_parallel_target] - 1) / R[long_parallel_target]))
	R[long_wall_target]=$((R[long_waves] * LONG_SLEEP + 5))

	printf '  %-50s %s in %s ms (pgbench -R %s, one per transaction)\n' "trivial runs started" \
		"$TRIVIAL_RUNS" "$((t1 - t0))" "$TRIVIAL_RATE"
	printf '  %-50s p50 %s ms, p95 %s ms, max %s ms\n' "trivial runs, created_at -> finished_at" \
		"${R[triv_p50]}" "${R[triv_p95]}" "${R[triv_max]}"
	printf '  %-50s %s of %s\n' "trivial runs that took more than 2 s" "${R[triv_late]}" "$TRIVIAL_RUNS"
	printf '  %-50s %s s (one after the other: %s s; %s wave(s) of %s: %s s)\n' \
		"long runs: first created -> last finished" "${R[long_wall]}" "$((LONG_RUNS * LONG_SLEEP))" \
		"${R[long_waves]}" "${R[long_parallel_target]}" "$((R[long_waves] * LONG_SLEEP))"
	printf '  %-50s %s\n' "long steps running at once, max (wf.step times)" "${R[long_overlap]}"
	printf '  %-50s %s (%s samples, every 100 ms)\n' "long-step workers at once, max (pg_stat_activity)" \
		"${R[long_workers_max]}" "${R[long_samples]}"
	printf '  %-50s %s (of which executors: %s)\n' "engine backends in pg_sleep at once, max" \
		"${R[long_sleeping_max]}" "${R[long_exec_sleeping_max]}"
	printf '  %-50s %s\n' "long steps' starts, s after the first created_at" "${R[long_starts]}"
	printf '  %-50s %s (for %s steps)\n' "attempts recorded" "${R[long_attempts]}" "$LONG_RUNS"
	printf '  %-50s %s %% of %s CPUs\n' "machine CPU busy during the part (all processes)" "${R[long_busy]}" "$(nproc)"
}

# ---------------------------------------------------------------------------
# 2. Flood vs trickle
# ---------------------------------------------------------------------------

measure_flood() {
	local alo ahi blo bhi line t0 t1 m0 m1 rate_opt=() how
	if ((TRICKLE_RATE > 0)); then
		rate_opt=(-R "$TRICKLE_RATE")
		how="$TRICKLE_RATE per second"
	else
		how="each as soon as the previous one finished"
	fi
	section "2. Flood vs trickle: alice starts $FLOOD runs of noop3 in one transaction, then bob $TRICKLE ($how)"
	m0=$(machine_ticks)
	alo=$(max_run_id)
	t0=$(now_ms)
	q_as alice -c "SELECT count(wf_start('noop3')) FROM generate_series(1, $FLOOD)" >/dev/null
	t1=$(now_ms)
	ahi=$(max_run_id)
	((ahi - alo == FLOOD)) || die "expected $FLOOD runs of alice's, found $((ahi - alo))"
	blo=$ahi
	if ! PGB_USER=bob run_child pgbench_run -n -c 1 "${rate_opt[@]}" -t "$TRICKLE" \
		-f "$BENCH_DIR/trickle.sql" >"$WORK/trickle.log" 2>&1; then
		cat "$WORK/trickle.log" >&2
		die "pgbench (bob's trickle) failed"
	fi
	bhi=$(max_run_id)
	((bhi - blo == TRICKLE)) || die "expected $TRICKLE runs of bob's, found $((bhi - blo))"
	wait_for_runs "$blo" "$bhi"
	check_completed "$blo" "$bhi" "bob's"
	wait_for_runs "$alo" "$ahi"
	m1=$(machine_ticks)
	check_completed "$alo" "$ahi" "alice's"

	line=$(q -F '|' -c "
		WITH b AS (SELECT * FROM wf.runs WHERE id > $blo AND id <= $bhi),
		a AS (SELECT * FROM wf.runs WHERE id > $alo AND id <= $ahi),
		l AS (SELECT extract(epoch FROM finished_at - created_at) * 1000 AS ms FROM b)
		SELECT (SELECT round(percentile_cont(0.50) WITHIN GROUP (ORDER BY ms)::numeric, 1) FROM l),
			   (SELECT round(max(ms)::numeric, 1) FROM l),
			   (SELECT count(*) FROM a WHERE a.finished_at <= (SELECT min(finished_at) FROM b)),
			   (SELECT count(*) FROM a WHERE a.finished_at <= (SELECT max(finished_at) FROM b)),
			   (SELECT round(extract(epoch FROM max(finished_at) - min(created_at))::numeric, 2) FROM a),
			   (SELECT round(extract(epoch FROM max(finished_at) - min(created_at))::numeric, 2) FROM b),
			   (SELECT round(extract(epoch FROM (SELECT max(finished_at) FROM b) - max(a.created_at))::numeric, 2) FROM a)")
	IFS='|' read -r "R[bob_p50]" "R[bob_max]" "R[alice_at_first]" "R[alice_at_last]" \
		"R[alice_wall]" "R[bob_span]" "R[bob_after_flood]" <<<"$line"
	R[alice_steps_s]=$(fmt '%.0f' "$(awk -v n="$FLOOD" -v w="${R[alice_wall]}" 'BEGIN { print (w > 0 ? 3 * n / w : 0) }')")
	R[flood_busy]=$(busy_pct "$m0" "$m1")

	printf '  %-50s %s ms\n' "alice's $FLOOD starts (1 transaction, client-side)" "$((t1 - t0))"
	printf '  %-50s p50 %s ms, max %s ms\n' "bob's runs, created_at -> finished_at" "${R[bob_p50]}" "${R[bob_max]}"
	printf '  %-50s %s of %s\n' "alice's runs finished when bob's first finished" "${R[alice_at_first]}" "$FLOOD"
	printf '  %-50s %s of %s\n' "alice's runs finished when bob's last finished" "${R[alice_at_last]}" "$FLOOD"
	printf '  %-50s %s s (%s s after alice'\''s last start)\n' "bob's $TRICKLE runs: first created -> last finished" \
		"${R[bob_span]}" "${R[bob_after_flood]}"
	printf '  %-50s %s s (%s steps/s)\n' "alice's backlog: first created -> last finished" \
		"${R[alice_wall]}" "${R[alice_steps_s]}"
	printf '  %-50s %s %% of %s CPUs\n' "machine CPU busy during the part (all processes)" "${R[flood_busy]}" "$(nproc)"
}

# ---------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------

print_summary() {
	local ok
	section "Summary (workers = $WORKERS$( ((QUICK)) && echo ', QUICK mode'))"
	cols "figure" "value" "target" "result"
	if [[ "$PART" != flood ]]; then
		row "trivial runs: max created -> finished (ms)" "${R[triv_max]}" "<= 2000" \
			"$(awk -v a="${R[triv_max]}" 'BEGIN { print (a <= 2000) }')"
		row "trivial runs: p95 (ms)" "${R[triv_p95]}" "" -
		row "long steps at once, max" "${R[long_overlap]}" ">= ${R[long_parallel_target]} (max_long_workers)" \
			"$((R[long_overlap] >= R[long_parallel_target]))"
		row "long-step workers at once, max (sampled)" "${R[long_workers_max]}" "" -
		ok=$(awk -v a="${R[long_wall]}" -v b="${R[long_wall_target]}" 'BEGIN { print (a <= b) }')
		row "$LONG_RUNS long runs of ${LONG_SLEEP} s: wall time (s)" "${R[long_wall]}" \
			"<= ${R[long_wall_target]} (${R[long_waves]} wave(s))" "$ok"
	fi
	if [[ "$PART" != long ]]; then
		row "bob's runs: p50 created -> finished (ms)" "${R[bob_p50]}" "" -
		row "bob's runs: max created -> finished (ms)" "${R[bob_max]}" "<= 2000" \
			"$(awk -v a="${R[bob_max]}" 'BEGIN { print (a <= 2000) }')"
		row "alice's runs done when bob's last was" "${R[alice_at_last]}" "< $FLOOD (not behind all)" \
			"$((R[alice_at_last] < FLOOD))"
	fi
	print_load_end
	printf '  uptime at the end: %s\n' "$(uptime)"
}

main() {
	parse_args "$@"
	find_bindir initdb pg_ctl psql pgbench
	set_traps

	printf 'pg_workflow fairness benchmark -- %s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
	start_server
	setup_database
	wait_for_executors
	print_machine
	warm_up
	[[ "$PART" == flood ]] || measure_long
	[[ "$PART" == long ]] || measure_flood
	print_summary
}

main "$@"
