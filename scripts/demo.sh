#!/usr/bin/env bash
# demo.sh -- the README's first command: see pg_workflow run a workflow.
#
# Usage (as root): bash scripts/demo.sh [--keep]
#
# Installs the dependencies (scripts/install-deps.sh), builds pg_workflow
# with -Werror and installs it (scripts/run-tests.sh build), starts a
# throwaway server in /tmp/pgwf-demo on port 5499 (scripts/pgwf-server.sh,
# Unix socket only), defines a 3-step workflow of SQL steps (validate the
# input, double a number, insert the result into a table), starts a run,
# waits for it and prints wf.runs, wf.steps and wf.history for the run, its
# explain tree and graph, and wf.progress.
# The server is stopped at the end unless --keep is given (then the script
# prints how to connect to it and how to stop it).
#
# Environment: PGWF_DEMO_DIR and PGWF_DEMO_PORT override the directory and
# port; PGWF_SKIP_BUILD=1 skips the dependencies, build and install steps.
set -euo pipefail

SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SERVER="$SCRIPTS/pgwf-server.sh"
DIR=${PGWF_DEMO_DIR:-/tmp/pgwf-demo}
PORT=${PGWF_DEMO_PORT:-5499}
WORKFLOW=demo-double
INPUT='{"n": 21}'
KEEP=false
STARTED=false

log() { printf '[demo] %s\n' "$*"; }
die() { printf '[demo] ERROR: %s\n' "$*" >&2; exit 1; }
section() { printf '\n==== %s ====\n' "$*"; }

usage() {
	# The header comment, without the '# '.
	awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
}

# psql on the demo server, stopping at the first error. Variables given as
# -v name=value are interpolated in statements read from standard input.
q() {
	bash "$SERVER" psql "$DIR" "$PORT" -v ON_ERROR_STOP=1 -q "$@"
}

stop_server() {
	if [[ "$STARTED" == true && "$KEEP" == false ]]; then
		bash "$SERVER" stop "$DIR" || true
	fi
}

on_exit() {
	local rc=$?
	stop_server
	if ((rc != 0)) && [[ -f "$DIR/server.log" ]]; then
		log "server log: $DIR/server.log"
	fi
	exit "$rc"
}

# The workflow: three SQL steps that run in list order. Each reads the run
# context through $1: {"input": ..., "steps": {"<name>": <output>}, "run": ...}.
# A step that returns {"error": ...} fails the run as a business error.
definition() {
	cat <<'JSON'
{
  "description": "pg_workflow demo: validate a number, double it, record the result",
  "steps": [
    {"name": "validate",
     "sql": "SELECT CASE WHEN jsonb_typeof($1->'input'->'n') = 'number' THEN jsonb_build_object('ok', true) ELSE jsonb_build_object('error', 'input.n must be a number') END"},
    {"name": "double",
     "sql": "SELECT (($1->'input'->>'n')::int * 2)"},
    {"name": "record",
     "sql": "INSERT INTO public.demo_results (n, doubled) VALUES (($1->'input'->>'n')::int, ($1->'steps'->>'double')::int) RETURNING id"}
  ]
}
JSON
}

main() {
	local args=("$@")
	while (($# > 0)); do
		case "$1" in
		--keep) KEEP=true ;;
		-h | --help) usage; exit 0 ;;
		*) usage >&2; die "unknown argument '$1'" ;;
		esac
		shift
	done
	[[ "$(id -u)" -eq 0 ]] ||
		die "must be run as root (or with sudo where it exists): it installs packages and the extension"

	if [[ "${PGWF_SKIP_BUILD:-}" == 1 ]]; then
		log "PGWF_SKIP_BUILD=1: using the pg_workflow already installed"
	else
		section "install dependencies, build and install pg_workflow"
		bash "$SCRIPTS/run-tests.sh" build
	fi

	section "start a throwaway server ($DIR, port $PORT)"
	trap on_exit EXIT
	if [[ -e "$DIR" ]]; then
		bash "$SERVER" destroy "$DIR"
	fi
	STARTED=true
	bash "$SERVER" start "$DIR" "$PORT"

	section "define workflow '$WORKFLOW'"
	definition
	q -c 'CREATE TABLE public.demo_results (id serial PRIMARY KEY, n int NOT NULL, doubled int NOT NULL, created_at timestamptz NOT NULL DEFAULT now())'
	local version run status
	version=$(q -At -v def="$(definition)" -v name="$WORKFLOW" <<<"SELECT wf_define(:'name', :'def'::jsonb);")
	log "wf_define('$WORKFLOW', ...) = version $version"

	section "start a run and wait for it"
	# wf_start takes effect when its transaction commits: start and wait are
	# two separate statements (psql autocommits each).
	run=$(q -At -v name="$WORKFLOW" -v input="$INPUT" <<<"SELECT wf_start(:'name', :'input'::jsonb);")
	log "wf_start('$WORKFLOW', '$INPUT') = run $run"
	status=$(q -At -v run="$run" <<<"SELECT wf_wait(:run, '60 seconds');")
	log "wf_wait($run) = $status"

	section "wf.runs"
	q -v run="$run" <<<'\x on
SELECT * FROM wf.runs WHERE id = :run;'
	section "wf.steps"
	q -v run="$run" <<<'SELECT step, status, attempt, output, error, duration
  FROM wf.steps WHERE run_id = :run ORDER BY started_at NULLS LAST, step;'
	section "wf.history"
	# The history's first column is its sequence number.
	q -v run="$run" <<<'SELECT * FROM wf.history WHERE run_id = :run ORDER BY 1;'
	section "public.demo_results"
	q -c 'SELECT * FROM public.demo_results ORDER BY id'
	section "wf_explain($run): the run as a tree"
	q -At -v run="$run" <<<'SELECT * FROM wf_explain(:run);'
	section "wf_graph($run): the run as a Mermaid flowchart (wf_graph(..., 'dot') for Graphviz)"
	q -At -v run="$run" <<<'SELECT wf_graph(:run);'
	section "wf.progress: the runs still going (none now; try it with \\watch 1 while runs go)"
	q -c 'SELECT run_id, workflow, steps_done, steps_total, percent, active_steps FROM wf.progress'

	if [[ "$status" != completed ]]; then
		die "run $run ended with status '$status' instead of 'completed'"
	fi
	section "done"
	log "run $run completed: 21 doubled is $(q -At -c 'SELECT doubled FROM public.demo_results ORDER BY id DESC LIMIT 1')"
	if [[ "$KEEP" == true ]]; then
		log "the server keeps running (--keep). Connect with:"
		log "  $SERVER psql $DIR $PORT"
		log "  (or as postgres: psql -h $DIR -p $PORT -U postgres postgres)"
		log "stop it with:  $SERVER stop $DIR"
		log "delete it with: $SERVER destroy $DIR"
	else
		log "stopping the server (use --keep to leave it running)"
	fi
}

main "$@"
