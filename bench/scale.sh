#!/usr/bin/env bash
# bench/scale.sh -- does a step cost the same however big its run, and
# however many runs the tables hold?  On throwaway PostgreSQL 15 servers
# (default port 5492, Unix socket only; a fresh cluster for each part) it
# measures:
#   map      -- a map of N trivial sql items, for N = 100, 1,000, 10,000,
#               100,000: items/s and executor CPU per item, against the
#               steps/s of 2,000 flat 3-step runs; meanwhile another role's
#               trivial runs (5 per second) and their latency;
#   cliff    -- executor CPU per step of 1,250 runs of 3 no-op steps after a
#               VACUUM ANALYZE of nearly empty tables, against the same
#               without it;
#   history  -- steps/s and executor CPU per step of 2,000 runs of 3 no-op
#               steps with 0, 1,000, 100,000 and 1,000,000 finished runs
#               in the tables (copies of a finished run, made with SQL),
#               and the time wf_metrics takes over all of them;
#   flow     -- the hot-path cost of flow control: 2,000 runs of 3 no-op
#               steps with a workflow concurrency key (100 keys, limit
#               10,000: never reached), and with a step concurrency key on
#               the middle step, against the same without, three times
#               each, in rotated order;
# prints a report with each figure beside its target, and stops the servers
# (also on failure or interrupt). See bench/README.md.
#
# Usage: bench/scale.sh [--quick] [--part LIST] [--sizes LIST] [--map-cap S]
#                       [--levels LIST] [--runs N] [--cliff-runs N]
#                       [--workers N] [--port P] [--keep]
#   --quick         small counts, for smoke tests (not for figures)
#   --part LIST     parts to run, comma-separated: map, cliff, history, flow
#                   (default: map,cliff,history,flow)
#   --sizes LIST    map sizes (default 100,1000,10000,100000)
#   --map-cap S     stop a map after S seconds and report the rate reached
#                   (default 30)
#   --levels LIST   finished runs in the tables (default 0,1000,100000,1000000)
#   --runs N        runs per measurement of the flat and history parts
#                   (default 2000)
#   --cliff-runs N  runs per measurement of the cliff part (default 1250)
#   --workers N     pg_workflow.workers (default 2)
#   --keep          leave the last part's server running at the end
#   --port P        server port (default 5492)
#   -h, --help      this text
#
# Run as root (server programs then run as user postgres through runuser) or
# as the user that should own the cluster. Needs bash, psql, pgbench, initdb
# and pg_ctl of PostgreSQL 15 (found with pg_config, or $PG_CONFIG),
# pg_stat_statements, and pg_workflow installed (make install).
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$BENCH_DIR/lib.sh"

LOG_TAG=scale
WORK_PREFIX=/tmp/pgwf-scale
SERVER_CONF=(
	"shared_preload_libraries = 'pg_workflow, pg_stat_statements'"
	"pg_stat_statements.track = all"
	"track_commit_timestamp = on"
	"max_wal_size = '8GB'"
)
ROW_WIDTHS=(46 14 22)

# Options.
PORT=5492
WORKERS=2
KEEP=0
QUICK=0
PERF=0
PARTS=map,cliff,history,flow
SIZES=100,1000,10000,100000
MAP_CAP=30
LEVELS=0,1000,100000,1000000
RUNS=2000
CLIFF_RUNS=1250
declare -A OPT=()

WARMUP_RUNS=50
WAIT_LIMIT_S=900
TAG=pgwf-scale
TRICKLE_RATE=5			# bob's trivial runs per second during a map
FAKE_BATCH=100000		# finished runs made per transaction

BOB_PID=

# Results.
declare -A R=()

parse_args() {
	local name
	while (($# > 0)); do
		case "$1" in
		--quick) QUICK=1 ;;
		--keep) KEEP=1 ;;
		--part | --sizes | --map-cap | --levels | --runs | --cliff-runs | --workers | --port)
			(($# >= 2)) || die "$1 needs a value"
			OPT[${1#--}]=$2
			shift
			;;
		--*=*)
			name=${1%%=*}
			name=${name#--}
			case "$name" in
			part | sizes | map-cap | levels | runs | cliff-runs | workers | port)
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
		SIZES=100,1000,10000
		MAP_CAP=20
		LEVELS=0,1000,10000
		RUNS=200
		CLIFF_RUNS=200
		WARMUP_RUNS=10
	fi
	for name in map-cap runs cliff-runs workers; do
		[[ -z "${OPT[$name]:-}" ]] || posint "${OPT[$name]}" || die "--$name must be a positive integer"
	done
	MAP_CAP=${OPT[map-cap]:-$MAP_CAP}
	RUNS=${OPT[runs]:-$RUNS}
	CLIFF_RUNS=${OPT[cliff-runs]:-$CLIFF_RUNS}
	WORKERS=${OPT[workers]:-$WORKERS}
	SIZES=${OPT[sizes]:-$SIZES}
	LEVELS=${OPT[levels]:-$LEVELS}
	PARTS=${OPT[part]:-$PARTS}
	[[ "$SIZES" =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || die "--sizes must be a list of positive integers"
	[[ "$LEVELS" =~ ^[0-9]+(,[0-9]+)*$ ]] || die "--levels must be a list of integers"
	[[ "$PARTS" =~ ^(map|cliff|history|flow)(,(map|cliff|history|flow))*$ ]] ||
		die "--part must list map, cliff, history, flow"
	PORT=${OPT[port]:-$PORT}
	if ! [[ "$PORT" =~ ^[0-9]+$ ]] || ((PORT < 1024 || PORT > 65535)); then
		die "--port must be in 1024..65535"
	fi
}

part() { [[ ",$PARTS," == *",$1,"* ]]; }

# cleanup hook: run_child's command and bob's pgbench.
cleanup_children() {
	stop_pid TERM "$CHILD_PID"
	stop_pid TERM "$BOB_PID"
}

# ---------------------------------------------------------------------------
# Servers
# ---------------------------------------------------------------------------

# new_cluster WHAT: stops and removes the previous part's cluster, if any,
# and starts a fresh one with the benchmark's objects and a warm-up.
new_cluster() {
	if ((SERVER_STARTED)); then
		stop_server
		rm -rf -- "$WORK"
		WORK=
	fi
	log "a fresh cluster for the $1 part"
	start_server
	q -f "$BENCH_DIR/setup.sql" >/dev/null
	q -f "$BENCH_DIR/scale.sql" >/dev/null
	wait_for_executors
	warm_up
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

executor_cpu() {
	local pids
	mapfile -t pids < <(executor_pids)
	sched_of "${pids[@]}"
}

# top_statements N: the N statements that took the most execution time
# since the last pg_stat_statements_reset(), all nesting levels.
top_statements() {
	q -F '|' -c "
		SELECT to_char(calls, 'FM9999999'), to_char(total_exec_time, 'FM9999990.0'),
			   to_char(mean_exec_time * 1000, 'FM99999990'),
			   left(regexp_replace(query, '\s+', ' ', 'g'), 70)
		  FROM pg_stat_statements
		 WHERE dbid = (SELECT oid FROM pg_database WHERE datname = 'postgres')
		   AND query NOT LIKE '%pg_stat_statements%' AND query NOT LIKE '%$TAG%'
		 ORDER BY total_exec_time DESC LIMIT $1" |
		awk -F'|' 'BEGIN { printf "    %8s %10s %9s  %s\n", "calls", "total ms", "mean us", "query" }
			{ printf "    %8s %10s %9s  %s\n", $1, $2, $3, $4 }'
}

print_machine() {
	machine_head ""
	item "uptime (start)" "$(uptime)"
	machine_tail
	print_settings shared_preload_libraries pg_stat_statements.track \
		track_commit_timestamp fsync synchronous_commit shared_buffers \
		max_wal_size autovacuum
}

# ---------------------------------------------------------------------------
# Flat runs: N runs of noop3 started in one transaction
# ---------------------------------------------------------------------------

# measure_runs KEY N [WORKFLOW [INPUT]]: N runs of WORKFLOW (default noop3)
# with input INPUT (an SQL expression of g, 1..N; default none); sets
# R[KEY_steps_s], R[KEY_cpu_us] (executor CPU per step), R[KEY_wait_us]
# (executor time waiting for a CPU, per step), R[KEY_wall_ms],
# R[KEY_start_us] (client-side cost of a wf_start), R[KEY_busy] (machine
# CPU busy, %).
measure_runs() {
	local key=$1 n=$2 wf=${3:-noop3} input=${4:-"'{}'::jsonb"}
	local lo hi t0 t1 c0 c1 w0 w1 m0 m1 line steps window
	q -c "SELECT pg_stat_statements_reset()" >/dev/null
	m0=$(machine_ticks)
	read -r c0 w0 <<<"$(executor_cpu)"
	lo=$(max_run_id)
	t0=$(now_ms)
	q -c "SELECT count(wf_start('$wf', $input)) FROM generate_series(1, $n) g" >/dev/null
	t1=$(now_ms)
	hi=$(max_run_id)
	((hi - lo == n)) || die "expected $n new runs, found $((hi - lo))"
	wait_for_runs "$lo" "$hi"
	read -r c1 w1 <<<"$(executor_cpu)"
	m1=$(machine_ticks)
	check_completed "$lo" "$hi" "$key"
	line=$(q -F '|' -c "/* $TAG */
		WITH r AS (SELECT * FROM wf.run WHERE id > $lo AND id <= $hi),
		s AS (SELECT s.* FROM wf.step s JOIN r ON r.id = s.run_id),
		c AS (SELECT min(pg_xact_commit_timestamp(h.xmin)) AS commit_ts
				FROM wf.history_log h JOIN r ON r.id = h.run_id
			   WHERE h.step IS NULL AND h.status = 'pending')
		SELECT (SELECT count(*) FROM s WHERE status = 'completed'),
			   round(extract(epoch FROM (SELECT max(finished_at) - min(started_at) FROM s)) * 1000, 1),
			   round(extract(epoch FROM (SELECT max(finished_at) FROM r) - c.commit_ts) * 1000, 1)
		  FROM c")
	IFS='|' read -r steps window "R[${key}_wall_ms]" <<<"$line"
	R[${key}_steps_s]=$(fmt '%.0f' "$(awk -v s="$steps" -v w="$window" 'BEGIN { print s / (w / 1000) }')")
	R[${key}_cpu_us]=$(fmt '%.0f' "$(awk -v c=$((c1 - c0)) -v s="$steps" 'BEGIN { print c / 1000 / s }')")
	R[${key}_wait_us]=$(fmt '%.0f' "$(awk -v c=$((w1 - w0)) -v s="$steps" 'BEGIN { print c / 1000 / s }')")
	R[${key}_start_us]=$(fmt '%.0f' "$(awk -v t=$((t1 - t0)) -v n="$n" 'BEGIN { print t * 1000 / n }')")
	R[${key}_busy]=$(busy_pct "$m0" "$m1")
	R[${key}_steps]=$steps
}

# print_runs KEY LABEL
print_runs() {
	local k=$1
	printf '  %-44s %s steps/s, %s us executor CPU/step (+%s us waiting for a CPU)\n' "$2" \
		"${R[${k}_steps_s]}" "${R[${k}_cpu_us]}" "${R[${k}_wait_us]}"
	printf '  %-44s wall %s ms from the commit, wf_start %s us, machine %s %% busy\n' "" \
		"${R[${k}_wall_ms]}" "${R[${k}_start_us]}" "${R[${k}_busy]}"
}

# ---------------------------------------------------------------------------
# Part "map"
# ---------------------------------------------------------------------------

# measure_map N: one run of workflow "map" with N items, owned by alice,
# while bob starts a trivial run 5 times a second.
measure_map() {
	local n=$1 lo id st t0 t1 c0 c1 w0 w1 line capped=0 bob_left i
	log "map of $n items (at most $MAP_CAP s)"
	lo=$(max_run_id)
	PGB_USER=bob pgbench_run -n -c 1 -R "$TRICKLE_RATE" -T $((MAP_CAP + 600)) \
		-f "$BENCH_DIR/latency.sql" >"$WORK/bob.$n.log" 2>&1 &
	BOB_PID=$!
	# Bob's first run is on its way before the map starts, however short.
	for ((i = 0; i < 100; i++)); do
		[[ -n "$(q -c "SELECT 1 FROM wf.run WHERE id > $lo AND owner::oid = 'bob'::regrole::oid LIMIT 1 /* $TAG */")" ]] && break
		sleep 0.05
	done
	q -c "SELECT pg_stat_statements_reset()" >/dev/null
	read -r c0 w0 <<<"$(executor_cpu)"
	t0=$(now_ms)
	id=$(q_as alice -c "SELECT wf_start('map', jsonb_build_object('n', $n))")
	# Polled, not waited for with wf_wait: a statement that lasts as long
	# as the map would hold a snapshot as old as its start all along, and
	# no item done meanwhile could be cleaned up (its index entries would
	# stay in every claim's way). Users waiting on long runs: see README.
	st=running
	while [[ "$st" == running || "$st" == pending ]] && (($(now_ms) - t0 < MAP_CAP * 1000)); do
		sleep 0.2
		st=$(q -c "SELECT status FROM wf.run WHERE id = $id /* $TAG */")
	done
	t1=$(now_ms)
	read -r c1 w1 <<<"$(executor_cpu)"
	if [[ "$st" != completed ]]; then
		[[ "$st" == running || "$st" == pending ]] || die "map run $id ended $st"
		capped=1
		log "map of $n items still $st after $MAP_CAP s: cancelling it"
		q -c "SELECT wf_cancel($id, 'bench/scale.sh: time cap reached') /* $TAG */" >/dev/null
		st=$(run_child q -c "SELECT wf_wait($id, '$WAIT_LIMIT_S seconds') /* $TAG */")
		[[ "$st" == cancelled ]] || die "map run $id is $st after wf_cancel"
		log "cancelled after $(($(now_ms) - t1)) ms"
	fi
	stop_pid TERM "$BOB_PID"
	BOB_PID=
	# Its session may still be in wf_wait (for up to 30 s): end it. Once it
	# has gone, every run it started is committed.
	q -c "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = 'bob'" >/dev/null
	for ((i = 0; i < 600; i++)); do
		[[ "$(q -c "SELECT count(*) FROM pg_stat_activity WHERE usename = 'bob'")" == 0 ]] && break
		sleep 0.1
	done
	bob_left=$(q -c "SELECT max(id) FROM wf.run WHERE id > $lo AND owner::oid = 'bob'::regrole::oid
					   AND status IN ('pending', 'running', 'waiting') /* $TAG */")
	[[ -z "$bob_left" ]] || wait_for_runs "$lo" "$bob_left"

	line=$(q -F '|' -c "/* $TAG */
		WITH i AS (SELECT * FROM wf.step WHERE run_id = $id AND parent = 'each'),
		b AS (SELECT extract(epoch FROM coalesce(finished_at, clock_timestamp()) - created_at) * 1000 AS ms,
					 status
				FROM wf.run WHERE id > $lo AND owner::oid = 'bob'::regrole::oid),
		g AS (SELECT * FROM wf.step WHERE run_id = $id AND step = 'gen')
		SELECT (SELECT count(*) FROM i WHERE status = 'completed'),
			   (SELECT round(extract(epoch FROM max(finished_at) FILTER (WHERE status = 'completed')
											   - min(started_at)) * 1000, 1) FROM i),
			   (SELECT round(extract(epoch FROM (SELECT min(started_at) FROM i) - g.finished_at) * 1000, 1) FROM g),
			   (SELECT octet_length(output::text) FROM g),
			   (SELECT count(*) FROM b),
			   (SELECT count(*) FROM b WHERE status <> 'completed'),
			   (SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 1) FROM b),
			   (SELECT round(max(ms)::numeric, 1) FROM b)")
	IFS='|' read -r "R[map${n}_items]" "R[map${n}_window]" "R[map${n}_expand]" "R[map${n}_gen_bytes]" \
		"R[map${n}_bob_n]" "R[map${n}_bob_bad]" "R[map${n}_bob_p50]" "R[map${n}_bob_max]" <<<"$line"
	R[map${n}_capped]=$capped
	R[map${n}_wall]=$((t1 - t0))
	R[map${n}_rate]=$(fmt '%.0f' "$(awk -v s="${R[map${n}_items]}" -v w="${R[map${n}_window]:-0}" \
		'BEGIN { print (w > 0 ? s / (w / 1000) : 0) }')")
	R[map${n}_cpu_us]=$(fmt '%.0f' "$(awk -v c=$((c1 - c0)) -v s="${R[map${n}_items]}" \
		'BEGIN { print (s > 0 ? c / 1000 / s : 0) }')")
	R[map${n}_wait_us]=$(fmt '%.0f' "$(awk -v c=$((w1 - w0)) -v s="${R[map${n}_items]}" \
		'BEGIN { print (s > 0 ? c / 1000 / s : 0) }')")

	printf '\n  map of %s items%s\n' "$n" "$( ((capped)) && echo " (CAPPED: stopped after $MAP_CAP s, rate reached)")"
	printf '    %-42s %s of %s in %s ms (first start .. last finish)\n' "items completed" \
		"${R[map${n}_items]}" "$n" "${R[map${n}_window]}"
	printf '    %-42s %s items/s, %s us executor CPU/item (+%s us waiting)\n' "RATE" \
		"${R[map${n}_rate]}" "${R[map${n}_cpu_us]}" "${R[map${n}_wait_us]}"
	printf '    %-42s %s ms (gen finished -> first item started: %s ms)\n' "start -> end (client-side)" \
		"${R[map${n}_wall]}" "${R[map${n}_expand]}"
	printf '    %-42s %s bytes of JSON text\n' "items array in every item's context" "${R[map${n}_gen_bytes]}"
	printf '    %-42s %s runs, p50 %s ms, max %s ms (%s not completed)\n' \
		"bob's trivial runs meanwhile (${TRICKLE_RATE}/s)" "${R[map${n}_bob_n]}" \
		"${R[map${n}_bob_p50]}" "${R[map${n}_bob_max]}" "${R[map${n}_bob_bad]}"
	if [[ "${R[map${n}_bob_bad]}" != 0 ]]; then
		q -F ' ' -c "SELECT 'run', id, status, created_at, finished_at FROM wf.run
					  WHERE id > $lo AND owner::oid = 'bob'::regrole::oid AND status <> 'completed'
					  ORDER BY id LIMIT 5 /* $TAG */" | sed 's/^/      not completed: /'
	fi
	printf '    top statements (pg_stat_statements, all levels):\n'
	top_statements 8
}

part_map() {
	local n
	section "Map size: one map of N trivial sql items, owned by alice; bob's trivial runs meanwhile"
	new_cluster map
	print_machine
	log "flat: $RUNS runs of noop3"
	measure_runs flat "$RUNS"
	print_runs flat "flat: $RUNS runs of 3 no-op steps"
	for n in ${SIZES//,/ }; do
		measure_map "$n"
	done
}

# ---------------------------------------------------------------------------
# Part "cliff"
# ---------------------------------------------------------------------------

part_cliff() {
	section "Cliff: $CLIFF_RUNS runs of noop3 on nearly empty tables, without and after VACUUM ANALYZE"
	new_cluster cliff
	((R[machine_printed])) || print_machine
	R[machine_printed]=1
	log "cliff, before: $CLIFF_RUNS runs"
	measure_runs cliff_before "$CLIFF_RUNS"
	print_runs cliff_before "fresh tables ($((2 * WARMUP_RUNS)) runs)"
	printf '    top statements:\n'
	top_statements 5
	log "emptying the tables, warm-up, VACUUM ANALYZE"
	q -c "CALL pgwf_bench_empty()" >/dev/null
	warm_up
	q -c "VACUUM (ANALYZE)" >/dev/null
	log "cliff, after: $CLIFF_RUNS runs"
	measure_runs cliff_after "$CLIFF_RUNS"
	print_runs cliff_after "emptied, $((2 * WARMUP_RUNS)) runs, VACUUM ANALYZE"
	printf '    top statements:\n'
	top_statements 5
	R[cliff_ratio]=$(fmt '%.2f' "$(awk -v a="${R[cliff_after_cpu_us]}" -v b="${R[cliff_before_cpu_us]}" \
		'BEGIN { print a / b }')")
	printf '  %-44s %s\n' "executor CPU/step, after / before" "${R[cliff_ratio]}"
}

# ---------------------------------------------------------------------------
# Part "flow"
# ---------------------------------------------------------------------------

part_flow() {
	local i k plain=() keyed=() stepkeyed=() plain_start=() keyed_start=()
	section "Flow control: $RUNS runs of noop3 with a concurrency key (limit never reached) and without"
	new_cluster flow
	((R[machine_printed])) || print_machine
	R[machine_printed]=1
	# Each variant goes first, second and last once: the tables grow by
	# every round, and what comes later pays for a larger history.
	local -a order=("plain keyed stepkeyed" "keyed stepkeyed plain" "stepkeyed plain keyed")
	for i in 1 2 3; do
		for k in ${order[i - 1]}; do
			log "flow, $k, round $i: $RUNS runs"
			if [[ $k == plain ]]; then
				measure_runs "flow_${k}$i" "$RUNS" noop3 "jsonb_build_object('k', g % 100)"
				plain+=("${R[flow_${k}${i}_cpu_us]}")
				plain_start+=("${R[flow_${k}${i}_start_us]}")
			elif [[ $k == keyed ]]; then
				measure_runs "flow_${k}$i" "$RUNS" noop3k "jsonb_build_object('k', g % 100)"
				keyed+=("${R[flow_${k}${i}_cpu_us]}")
				keyed_start+=("${R[flow_${k}${i}_start_us]}")
			else
				measure_runs "flow_${k}$i" "$RUNS" noop3s "jsonb_build_object('k', g % 100)"
				stepkeyed+=("${R[flow_${k}${i}_cpu_us]}")
			fi
			print_runs "flow_${k}$i" "$k, round $i"
		done
	done
	R[flow_plain_cpu_us]=$(printf '%s\n' "${plain[@]}" | sort -n | sed -n 2p)
	R[flow_keyed_cpu_us]=$(printf '%s\n' "${keyed[@]}" | sort -n | sed -n 2p)
	R[flow_stepkeyed_cpu_us]=$(printf '%s\n' "${stepkeyed[@]}" | sort -n | sed -n 2p)
	R[flow_ratio]=$(fmt '%.2f' "$(awk -v a="${R[flow_keyed_cpu_us]}" -v b="${R[flow_plain_cpu_us]}" \
		'BEGIN { print a / b }')")
	R[flow_step_ratio]=$(fmt '%.2f' "$(awk -v a="${R[flow_stepkeyed_cpu_us]}" -v b="${R[flow_plain_cpu_us]}" \
		'BEGIN { print a / b }')")
	# The admission is in wf_start, the release at the run's end.
	R[flow_plain_start_us]=$(printf '%s\n' "${plain_start[@]}" | sort -n | sed -n 2p)
	R[flow_keyed_start_us]=$(printf '%s\n' "${keyed_start[@]}" | sort -n | sed -n 2p)
	printf '  %-44s %s\n' "executor CPU/step, keyed / plain (medians)" "${R[flow_ratio]}"
	printf '  %-44s %s\n' "executor CPU/step, step key / plain (medians)" "${R[flow_step_ratio]}"
}

# ---------------------------------------------------------------------------
# Part "history"
# ---------------------------------------------------------------------------

# metrics_time KEY: R[KEY_msteps], the finished steps of noop3, and
# R[KEY_metrics_ms], the best of 3 timings of wf_metrics over all of them.
metrics_time() {
	local i t0 t1 best=
	R[$1_msteps]=$(q -c "SELECT count(*) FROM wf.step s JOIN wf.run r ON r.id = s.run_id
						  WHERE r.workflow = 'noop3' AND r.finished_at IS NOT NULL")
	for i in 1 2 3; do
		t0=$(now_ms)
		q -c "SELECT count(*) FROM wf_metrics('noop3', '30 days')" >/dev/null
		t1=$(now_ms)
		if [[ -z "$best" ]] || ((t1 - t0 < best)); then
			best=$((t1 - t0))
		fi
	done
	R[$1_metrics_ms]=$best
}

part_history() {
	local level template faked=0 b t0 t1 t2 line first=
	section "History size: $RUNS runs of noop3 with N finished runs in the tables"
	new_cluster history
	((R[machine_printed])) || print_machine
	R[machine_printed]=1
	template=$(q -c "SELECT max(id) FROM wf.run WHERE workflow = 'noop3' AND status = 'completed'")
	R[hist_levels]=
	for level in ${LEVELS//,/ }; do
		((level >= faked)) || die "--levels must be increasing"
		if ((level > faked)); then
			log "making $((level - faked)) finished runs (copies of run $template)"
			t0=$(now_ms)
			while ((faked < level)); do
				b=$((level - faked < FAKE_BATCH ? level - faked : FAKE_BATCH))
				q -c "SELECT pgwf_bench_fake_runs($template, $b)" >/dev/null
				faked=$((faked + b))
			done
			t1=$(now_ms)
			q -c "VACUUM (ANALYZE) wf.run, wf.step, wf.history_log" >/dev/null
			q -c "CHECKPOINT" >/dev/null
			t2=$(now_ms)
			log "made in $((t1 - t0)) ms, VACUUM ANALYZE + CHECKPOINT $((t2 - t1)) ms"
		fi
		line=$(q -F '|' -c "SELECT (SELECT count(*) FROM wf.run
									 WHERE status IN ('completed', 'failed', 'cancelled')),
								   (SELECT count(*) FROM wf.history_log),
								   pg_size_pretty(pg_total_relation_size('wf.run') + pg_total_relation_size('wf.step')
												  + pg_total_relation_size('wf.history_log'))")
		IFS='|' read -r "R[hist${level}_finished]" "R[hist${level}_hrows]" "R[hist${level}_size]" <<<"$line"
		log "history level $level: $RUNS runs"
		measure_runs "hist$level" "$RUNS"
		printf '\n  %s fake finished runs (%s finished runs, %s history rows, %s in wf.run, wf.step, wf.history_log)\n' \
			"$level" "${R[hist${level}_finished]}" "${R[hist${level}_hrows]}" "${R[hist${level}_size]}"
		((level == 0)) || printf '    made in %s ms; VACUUM ANALYZE and CHECKPOINT %s ms\n' "$((t1 - t0))" "$((t2 - t1))"
		print_runs "hist$level" "  $RUNS runs"
		printf '    top statements:\n'
		top_statements 8
		metrics_time "hist$level"
		printf '    wf_metrics(noop3) over %s finished steps: best of 3 %s ms\n' \
			"${R[hist${level}_msteps]}" "${R[hist${level}_metrics_ms]}"
		first=${first:-$level}
		R[hist${level}_cpu_ratio]=$(fmt '%.2f' "$(awk -v a="${R[hist${level}_cpu_us]}" \
			-v b="${R[hist${first}_cpu_us]}" 'BEGIN { print a / b }')")
		R[hist${level}_rate_ratio]=$(fmt '%.2f' "$(awk -v a="${R[hist${level}_steps_s]}" \
			-v b="${R[hist${first}_steps_s]}" 'BEGIN { print a / b }')")
		R[hist_levels]+="$level "
	done
	R[hist_first]=$first
}

# ---------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------

print_summary() {
	local n first=0 last=0 ok level k note
	section "Summary (workers = $WORKERS$( ((QUICK)) && echo ', QUICK mode'))"
	cols "figure" "value" "target" "result"
	if part map; then
		row "flat runs: steps/s" "${R[flat_steps_s]}" "" -
		row "flat runs: executor CPU/step (us)" "${R[flat_cpu_us]}" "" -
		for n in ${SIZES//,/ }; do
			((first)) || first=$n
			last=$n
			note=
			[[ "${R[map${n}_capped]}" == 1 ]] && note=' (capped)'
			row "map $n: items/s$note" "${R[map${n}_rate]}" "" -
			row "map $n: executor CPU/item (us)" "${R[map${n}_cpu_us]}" "" -
		done
		for n in ${SIZES//,/ }; do
			((n == first)) && continue
			k=$(fmt '%.2f' "$(awk -v a="${R[map${n}_rate]}" -v b="${R[map${first}_rate]}" 'BEGIN { print (b > 0 ? a / b : 0) }')")
			ok=$(awk -v a="$k" 'BEGIN { print (a >= 0.8) }')
			row "map $n / map $first items/s (flat)" "$k" ">= 0.8" "$ok"
		done
		k=$(fmt '%.2f' "$(awk -v a="${R[map${last}_rate]}" -v b="${R[flat_steps_s]}" 'BEGIN { print a / b }')")
		row "map $last items/s / flat steps/s" "$k" ">= 0.5" "$(awk -v a="$k" 'BEGIN { print (a >= 0.5) }')"
		for n in ${SIZES//,/ }; do
			if [[ "${R[map${n}_bob_n]}" == 0 ]]; then
				row "bob's runs during map $n: max (ms)" "no run" "<= 2000, all done" -
				continue
			fi
			ok=$(awk -v a="${R[map${n}_bob_max]}" -v b="${R[map${n}_bob_bad]}" 'BEGIN { print (a <= 2000 && b == 0) }')
			row "bob's runs during map $n: max (ms)" "${R[map${n}_bob_max]}" "<= 2000, all done" "$ok"
		done
	fi
	if part cliff; then
		row "cliff: CPU/step before (us)" "${R[cliff_before_cpu_us]}" "" -
		row "cliff: CPU/step after VACUUM ANALYZE (us)" "${R[cliff_after_cpu_us]}" \
			"<= 1.10 x before" "$(awk -v a="${R[cliff_ratio]}" 'BEGIN { print (a <= 1.10) }')"
		row "cliff: steps/s before / after" "${R[cliff_before_steps_s]} / ${R[cliff_after_steps_s]}" "" -
	fi
	if part history; then
		for level in ${R[hist_levels]}; do
			row "history $level: steps/s" "${R[hist${level}_steps_s]}" "" -
			if ((level == R[hist_first])); then
				row "history $level: executor CPU/step (us)" "${R[hist${level}_cpu_us]}" "" -
			else
				row "history $level: executor CPU/step (us)" "${R[hist${level}_cpu_us]}" \
					"<= 1.10 x level ${R[hist_first]}" "$(awk -v a="${R[hist${level}_cpu_ratio]}" 'BEGIN { print (a <= 1.10) }')"
				row "history $level: steps/s / level ${R[hist_first]}" "${R[hist${level}_rate_ratio]}" \
					">= 0.90" "$(awk -v a="${R[hist${level}_rate_ratio]}" 'BEGIN { print (a >= 0.90) }')"
			fi
			if ((R[hist${level}_msteps] >= 1000000)); then
				row "history $level: wf_metrics, ${R[hist${level}_msteps]} steps (ms)" \
					"${R[hist${level}_metrics_ms]}" "<= 1000" \
					"$(awk -v a="${R[hist${level}_metrics_ms]}" 'BEGIN { print (a <= 1000) }')"
			else
				row "history $level: wf_metrics, ${R[hist${level}_msteps]} steps (ms)" \
					"${R[hist${level}_metrics_ms]}" "" -
			fi
		done
	fi
	if part flow; then
		row "flow: executor CPU/step, plain (us)" "${R[flow_plain_cpu_us]}" "" -
		row "flow: executor CPU/step, concurrency key (us)" "${R[flow_keyed_cpu_us]}" "" -
		row "flow: keyed / plain" "${R[flow_ratio]}" "<= 1.10" \
			"$(awk -v a="${R[flow_ratio]}" 'BEGIN { print (a <= 1.10) }')"
		row "flow: wf_start, plain / keyed (us)" "${R[flow_plain_start_us]} / ${R[flow_keyed_start_us]}" "" -
		row "flow: executor CPU/step, step key on 1 of 3 (us)" "${R[flow_stepkeyed_cpu_us]}" "" -
		row "flow: step key / plain" "${R[flow_step_ratio]}" "<= 1.25" \
			"$(awk -v a="${R[flow_step_ratio]}" 'BEGIN { print (a <= 1.25) }')"
	fi
	print_load_end
	printf '  uptime at the end: %s\n' "$(uptime)"
}

main() {
	parse_args "$@"
	find_bindir initdb pg_ctl psql pgbench
	# Keep the fake history: no pruning, where the engine has it.
	if grep -qa 'pg_workflow.retention' "$PKGLIB/pg_workflow.so"; then
		SERVER_CONF+=("pg_workflow.retention = 0")
	fi
	set_traps

	printf 'pg_workflow scale benchmark -- %s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
	R[machine_printed]=0
	if part map; then
		part_map
		R[machine_printed]=1
	fi
	part cliff && part_cliff
	part history && part_history
	part flow && part_flow
	print_summary
}

main "$@"
