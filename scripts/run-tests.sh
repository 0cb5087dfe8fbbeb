#!/usr/bin/env bash
# run-tests.sh -- THE test command of pg_workflow. Installs the dependencies,
# builds the extension with -Werror, installs it system-wide, then runs the
# pg_regress tests (sql/, expected/) and the TAP tests (test/t/*.pl) as user
# postgres in a scratch copy of the tree (PostgreSQL refuses to run as root).
#
# Usage (as root):
#   scripts/run-tests.sh [all]             build, install, regress + TAP tests
#   scripts/run-tests.sh regress [TEST...] pg_regress only (TEST: name in sql/;
#                                          init creates the extension: regress init runs)
#   scripts/run-tests.sh tap [TEST...]     TAP only; TEST is t/001_x.pl
#                                          (relative to test/), test/t/001_x.pl or 001_x
#   scripts/run-tests.sh valgrind [TEST...] TAP tests (default: 001, 024)
#                                          with their servers under valgrind memcheck;
#                                          "all" ends with this pass
#   scripts/run-tests.sh build             install deps, build and install only
#
# The last line printed is "N passed, N failed" (pg_regress tests plus TAP
# test files; tests that could not run, e.g. after a failed build, count as
# failed). The exit status is 0 only when nothing failed.
#
# The TAP phase first builds release 0.1 from the git history for the upgrade
# test (scripts/build-release.sh).
#
# Environment: PGWF_SKIP_DEPS=1 skips scripts/install-deps.sh; PGWF_KEEP_TMP=1
# keeps the scratch copy (it is always kept after a failure);
# PGWF_REGRESS_TIMEOUT / PGWF_TAP_TIMEOUT bound each phase (seconds, default
# 600 / 1200); PROVE_FLAGS (default --timer), PG_TEST_EXTRA,
# PG_TEST_TIMEOUT_DEFAULT and PG_TEST_NOCLEAN are passed to the tests;
# PG_CONFIG selects the installation (default PostgreSQL 15's pg_config).
set -euo pipefail

SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPTS/.." && pwd)
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
PROVE_FLAGS=${PROVE_FLAGS---timer}
REGRESS_TIMEOUT=${PGWF_REGRESS_TIMEOUT:-600}
TAP_TIMEOUT=${PGWF_TAP_TIMEOUT:-1200}
TEST_LOCALE=C.UTF-8

WORK=""        # scratch directory, owned by postgres
SRC=""         # the copy of the tree inside it
TOTAL_PASSED=0
TOTAL_FAILED=0
SUMMARY=()     # one line per phase, printed at the end
FAILURE=false
KEEP_ON_ERROR=false

log() { printf '[run-tests] %s\n' "$*"; }
die() { printf '[run-tests] ERROR: %s\n' "$*" >&2; exit 1; }
section() { printf '\n==== %s ====\n' "$*"; }

usage() {
	# The header comment, without the '# '.
	awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
}

# Record a phase's result.
record() {
	local phase=$1 passed=$2 failed=$3 note=${4:-}
	TOTAL_PASSED=$((TOTAL_PASSED + passed))
	TOTAL_FAILED=$((TOTAL_FAILED + failed))
	((failed == 0)) || FAILURE=true
	SUMMARY+=("$(printf '%-8s %d passed, %d failed%s' "$phase:" "$passed" "$failed" "${note:+ ($note)}")")
}

# Run a command as postgres in the scratch tree, with a clean, predictable
# environment (no PG* variables from the caller, UTF-8 C locale).
as_pg() {
	local -a pass=()
	local var
	for var in CI PG_TEST_EXTRA PG_TEST_TIMEOUT_DEFAULT PG_TEST_NOCLEAN PGWF_RELEASE_0_1 PGWF_VALGRIND; do
		if [[ -n "${!var:-}" ]]; then
			pass+=("$var=${!var}")
		fi
	done
	(cd "$SRC" && runuser -u postgres -- env -i \
		HOME="$WORK" USER=postgres LOGNAME=postgres \
		PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin \
		LANG="$TEST_LOCALE" LC_ALL="$TEST_LOCALE" TERM=dumb \
		"${pass[@]}" "$@")
}

# Print the last lines of each file given, with a header.
show_tail() {
	local lines=$1 file
	shift
	for file in "$@"; do
		[[ -f "$file" ]] || continue
		printf -- '---- %s (last %d lines) ----\n' "${file#"$SRC"/}" "$lines"
		tail -n "$lines" "$file"
	done
}

# Stop any server left behind under the scratch directory (a test that timed
# out or died); only servers whose data directory is ours are touched.
stop_leftover_servers() {
	[[ -n "$WORK" && -d "$WORK" ]] || return 0
	local pidfile datadir
	while IFS= read -r pidfile; do
		datadir=$(dirname "$pidfile")
		log "stopping a leftover server in $datadir"
		(cd / && runuser -u postgres -- "$BINDIR/pg_ctl" -D "$datadir" -m immediate -w stop) || true
	done < <(find "$WORK" -name postmaster.pid -type f 2>/dev/null)
}

# Stop leftover servers, then delete the scratch copy unless something failed
# (or PGWF_KEEP_TMP=1). Runs once: at the end of main, or on an early exit.
finish() {
	local failed=$1
	stop_leftover_servers
	if [[ -n "$WORK" && -d "$WORK" ]]; then
		if [[ "$failed" == true || "${PGWF_KEEP_TMP:-}" == 1 ]]; then
			log "scratch copy kept for inspection: $SRC"
		else
			rm -rf -- "$WORK"
		fi
	fi
	WORK=""
}

on_exit() {
	local rc=$?
	if [[ -n "$WORK" ]]; then
		# Keep the copy after a failed build or test, not after a usage error.
		if ((rc == 0)) || [[ "$KEEP_ON_ERROR" == false ]]; then
			finish "$FAILURE"
		else
			finish true
		fi
	fi
	exit "$rc"
}

install_deps() {
	if [[ "${PGWF_SKIP_DEPS:-}" == 1 ]]; then
		log "PGWF_SKIP_DEPS=1: not running install-deps.sh"
	else
		section "dependencies"
		bash "$SCRIPTS/install-deps.sh"
	fi
	[[ -x "$PG_CONFIG" ]] || die "$PG_CONFIG not found (install postgresql-server-dev-15)"
	BINDIR=$("$PG_CONFIG" --bindir)
}

copy_tree() {
	WORK=$(mktemp -d /tmp/pg_workflow-tests.XXXXXX)
	SRC="$WORK/src"
	mkdir "$SRC"
	log "copying $REPO to $SRC (without .git and build/test output)"
	tar -C "$REPO" --anchored \
		--exclude=./.git --exclude=./tmp_check --exclude=./test/tmp_check \
		--exclude=./results --exclude=./log --exclude=./bench/out \
		--exclude=./regression.diffs --exclude=./regression.out \
		-cf - . | tar -C "$SRC" --no-same-owner -xf -
	# The Node example agent's package (pg), from the npm registry unless
	# the tree has it already.
	if [[ ! -d "$SRC/examples/agents/node_modules" ]]; then
		log "npm ci in examples/agents (the Node example agent's pg package)"
		(cd "$SRC/examples/agents" && HOME="$WORK" npm ci --no-audit --no-fund --loglevel=error) ||
			log "npm ci failed: the Node example agent's tests will fail"
	fi
	# Mermaid's parser (with jsdom), which 060 runs on wf_graph's output.
	if [[ ! -d "$SRC/test/mermaid/node_modules" ]]; then
		log "npm ci in test/mermaid (Mermaid's parser, for 060)"
		(cd "$SRC/test/mermaid" && HOME="$WORK" npm ci --no-audit --no-fund --loglevel=error) ||
			log "npm ci failed: 060 will skip its Mermaid parser checks"
	fi
	chown -R postgres:postgres "$WORK"
}

# make clean && make COPT=-Werror (as postgres) && make install (as root).
build_and_install() {
	section "build (make COPT=-Werror, $("$PG_CONFIG" --version))"
	if ! as_pg make -s clean PG_CONFIG="$PG_CONFIG" ||
		! as_pg make -j"$(nproc)" COPT=-Werror PG_CONFIG="$PG_CONFIG"; then
		return 1
	fi
	section "make install"
	(cd "$SRC" && make install PG_CONFIG="$PG_CONFIG") || return 1
	chown -R postgres:postgres "$WORK"
}

# The previous release, built from the git history for the upgrade test
# (044_upgrade): its installation's root in PGWF_RELEASE_0_1.  Without the
# history (a shallow clone, a tree without .git) the test says it skips
# that half.
build_release() {
	local dest="$WORK/release-0.1" path rc=0
	section "release 0.1, for the upgrade test"
	path=$(PG_CONFIG="$PG_CONFIG" bash "$SCRIPTS/build-release.sh" 0.1 "$dest") || rc=$?
	if ((rc == 3)); then
		log "release 0.1 not built: 044_upgrade runs without it"
		return 0
	fi
	((rc == 0)) || return 1
	chown -R postgres:postgres "$dest"
	export PGWF_RELEASE_0_1="$path"
	log "release 0.1 installed in $path"
}

# The value of a variable of the Makefile (e.g. REGRESS), as make sees it.
make_var() {
	printf 'print-%%:\n\t@echo $(%s)\n' '$*' >"$WORK/print.mk"
	(cd "$SRC" && make -s --no-print-directory -f Makefile -f "$WORK/print.mk" \
		PG_CONFIG="$PG_CONFIG" "print-$1")
}

# Set TAP_FILES to the TAP test files to run, relative to the tree's root
# (PGXS runs prove there): the ones named, or all of test/t/*.pl.
TAP_FILES=()
resolve_tap_files() {
	local arg name
	TAP_FILES=()
	if (($# == 0)); then
		for name in "$SRC"/test/t/*.pl; do
			[[ -f "$name" ]] && TAP_FILES+=("${name#"$SRC"/}")
		done
		return 0
	fi
	for arg in "$@"; do
		name=${arg#./}
		name=${name#test/}
		name=${name#t/}
		[[ "$name" == *.pl ]] || name="$name.pl"
		[[ -f "$SRC/test/t/$name" ]] || die "no such TAP test: test/t/$name"
		TAP_FILES+=("test/t/$name")
	done
}

run_regress() {
	local -a tests
	if (($# > 0)); then
		tests=("$@")
	else
		read -r -a tests <<<"$(make_var REGRESS)"
	fi
	section "pg_regress: ${tests[*]:-(none)}"
	if ((${#tests[@]} == 0)); then
		log "REGRESS is empty in the Makefile: no pg_regress tests"
		record regress 0 0 "none"
		return 0
	fi
	local out="$WORK/regress.out" rc=0
	as_pg timeout -k 30 "$REGRESS_TIMEOUT" \
		make installcheck TAP_TESTS= REGRESS="${tests[*]}" PG_CONFIG="$PG_CONFIG" 2>&1 |
		tee "$out" || rc=$?

	# pg_regress ends with " All N tests passed. ", " M of N tests failed. ",
	# or (with ignored tests) " M of N tests passed, ...".
	local expected=${#tests[@]} passed=0 failed=0 note="" summary
	summary=$(grep -E '^ *(All [0-9]+ tests passed|[0-9]+ of [0-9]+ tests (failed|passed))' "$out" | tail -n 1 || true)
	if [[ "$summary" =~ All\ ([0-9]+)\ tests\ passed ]]; then
		passed=${BASH_REMATCH[1]}
	elif [[ "$summary" =~ ([0-9]+)\ of\ ([0-9]+)\ tests\ failed ]]; then
		failed=${BASH_REMATCH[1]}
		passed=$((BASH_REMATCH[2] - BASH_REMATCH[1]))
	elif [[ "$summary" =~ ([0-9]+)\ of\ ([0-9]+)\ tests\ passed ]]; then
		passed=${BASH_REMATCH[1]}
	else
		# No summary (pg_regress did not finish): count the per-test lines.
		passed=$(grep -cE '\.\.\. ok( |$)' "$out" || true)
		failed=$(grep -cE '\.\.\. (FAILED|failed)' "$out" || true)
	fi
	if ((passed + failed < expected)); then
		note="$((expected - passed - failed)) did not run"
		failed=$((expected - passed))
	fi
	if ((rc == 124)); then
		note="timed out after ${REGRESS_TIMEOUT}s"
	fi
	if ((rc != 0 && failed == 0)); then
		failed=1
		note="${note:-make installcheck exited with status $rc}"
	fi
	record regress "$passed" "$failed" "$note"

	if ((failed > 0)); then
		section "pg_regress failed: regression.diffs and server log"
		if [[ -f "$SRC/regression.diffs" ]]; then
			head -n 500 "$SRC/regression.diffs"
			(($(wc -l <"$SRC/regression.diffs") <= 500)) ||
				log "(regression.diffs truncated; full file: $SRC/regression.diffs)"
		fi
		# pg_regress logs its temporary instance in log/ (outputdir).
		show_tail 60 "$SRC"/log/* "$SRC"/tmp_check/log/*
	fi
}

run_tap() {
	resolve_tap_files "$@"
	local -a files=("${TAP_FILES[@]}")
	local phase=${TAP_PHASE:-tap}
	section "TAP (prove${PGWF_VALGRIND:+, server under valgrind}): ${files[*]:-(none)}"
	if ((${#files[@]} == 0)); then
		log "no TAP tests in test/t"
		record "$phase" 0 0 "none"
		return 0
	fi
	local out="$WORK/$phase.out" rc=0
	as_pg timeout -k 30 "$TAP_TIMEOUT" \
		make installcheck REGRESS= PROVE_TESTS="${files[*]}" PROVE_FLAGS="$PROVE_FLAGS" \
		PG_CONFIG="$PG_CONFIG" 2>&1 |
		tee "$out" || rc=$?

	# prove ends with "Files=N, Tests=M, ..." and "Result: PASS|FAIL"; every
	# file that failed has a "FILE (Wstat: ...)" line in "Test Summary Report".
	local expected=${#files[@]} ran="" failed=0 passed note=""
	local -a bad
	# (A file listed only for "TODO passed" has Wstat: 0 and Failed: 0.)
	mapfile -t bad < <(sed -nE '/\(Wstat: 0 Tests: [0-9]+ Failed: 0\)/d; s/^(\S+\.pl)[[:space:]]+\(Wstat.*/\1/p' "$out" | sort -u)
	ran=$(sed -nE 's/^Files=([0-9]+),.*/\1/p' "$out" | tail -n 1)
	if [[ -n "$ran" ]]; then
		failed=${#bad[@]}
		if ((failed == 0)) && grep -q '^Result: FAIL' "$out"; then
			failed=1
		fi
		passed=$((ran - failed))
		if ((ran < expected)); then
			note="$((expected - ran)) did not run"
			failed=$((expected - passed))
		fi
	else
		passed=0
		failed=$expected
		note="prove did not finish"
	fi
	if ((rc == 124)); then
		note="timed out after ${TAP_TIMEOUT}s"
	fi
	if ((rc != 0 && failed == 0)); then
		failed=1
		note="${note:-make installcheck exited with status $rc}"
	fi
	record "$phase" "$passed" "$failed" "$note"

	if ((failed > 0)); then
		section "TAP failed: logs (tmp_check/log)"
		if ((${#bad[@]} == 0)); then
			show_tail 80 "$SRC"/tmp_check/log/*
		else
			local f b
			for f in "${bad[@]}"; do
				b=$(basename "$f" .pl)
				show_tail 150 "$SRC/tmp_check/log/regress_log_$b"
				show_tail 60 "$SRC/tmp_check/log/${b}"_*.log
			done
		fi
	fi
}

# The valgrind pass: TAP tests whose servers run under memcheck
# (scripts/valgrind-install.sh), then every process's report read: an error
# that test/valgrind.supp does not suppress fails the phase.
VALGRIND_TESTS=(001_basic 024_context)
run_valgrind() {
	local vg="$WORK/valgrind" logs="$WORK/valgrind-logs" f n=0 bad=0
	as_pg bash "$SRC/scripts/valgrind-install.sh" "$vg" "$logs" >/dev/null || {
		record valgrind 0 1 "scripts/valgrind-install.sh failed"
		return 0
	}
	local -a tests=("$@")
	((${#tests[@]} > 0)) || tests=("${VALGRIND_TESTS[@]}")
	PGWF_VALGRIND="$vg" PG_TEST_TIMEOUT_DEFAULT=${PG_TEST_TIMEOUT_DEFAULT:-900} TAP_PHASE=valgrind \
		run_tap "${tests[@]}"
	section "valgrind reports ($logs)"
	for f in "$logs"/*.log; do
		[[ -e "$f" ]] || continue
		n=$((n + 1))
		if grep -q '<insert_a_suppression_name_here>' "$f"; then
			bad=$((bad + 1))
			((bad > 3)) || { log "errors in $f:"; head -n 80 "$f"; }
		fi
	done
	log "$n server processes ran under memcheck; $bad reported an error"
	if ((n == 0)); then
		record valgrind-log 0 1 "no process ran under valgrind"
	elif ((bad > 0)); then
		record valgrind-log 0 1 "$bad processes reported memcheck errors"
	else
		record valgrind-log 1 0 "$n processes, no error"
	fi
}

# Fail fast on a misspelt test name, before the build.
check_test_names() {
	local t
	case "$MODE" in
	tap | valgrind) resolve_tap_files "$@" ;;
	regress)
		for t in "$@"; do
			[[ -f "$SRC/sql/$t.sql" ]] || die "no such pg_regress test: sql/$t.sql"
		done
		;;
	esac
}

# Everything counts as failed when the build does not even succeed.
record_build_failure() {
	local n=0 regress
	regress=$(make_var REGRESS 2>/dev/null || true)
	if [[ "$MODE" == regress && $# -gt 0 ]]; then
		n=$#
	elif [[ "$MODE" != tap ]]; then
		n=$(wc -w <<<"$regress")
	fi
	if [[ "$MODE" != regress ]]; then
		resolve_tap_files "$@"
		n=$((n + ${#TAP_FILES[@]}))
	fi
	((n > 0)) || n=1
	record build 0 "$n" "build failed: no test ran"
}

main() {
	MODE=${1:-all}
	(($# == 0)) || shift
	case "$MODE" in
	all | build) (($# == 0)) || die "'$MODE' takes no arguments" ;;
	regress | tap | valgrind) ;;
	-h | --help | help) usage; exit 0 ;;
	*) usage >&2; die "unknown mode '$MODE'" ;;
	esac
	[[ "$(id -u)" -eq 0 ]] ||
		die "must be run as root (or with sudo where it exists): it installs packages and the extension, and runs the tests as postgres"

	local start=$SECONDS
	trap on_exit EXIT
	install_deps
	copy_tree
	check_test_names "$@"
	KEEP_ON_ERROR=true
	if ! build_and_install; then
		section "BUILD FAILED"
		[[ "$MODE" != build ]] || die "build failed"
		record_build_failure "$@"
	elif [[ "$MODE" == build ]]; then
		log "pg_workflow built and installed into $("$PG_CONFIG" --pkglibdir) and $("$PG_CONFIG" --sharedir)/extension"
		return 0
	else
		[[ "$MODE" == tap || "$MODE" == valgrind ]] || run_regress "$@"
		if [[ "$MODE" == all || "$MODE" == tap ]]; then
			build_release || record build-release 0 1 "release 0.1 could not be built"
			run_tap "$@"
		fi
		if [[ "$MODE" == all || "$MODE" == valgrind ]]; then
			run_valgrind "$@"
		fi
	fi

	finish "$FAILURE"
	section "summary ($((SECONDS - start))s)"
	printf '%s\n' "${SUMMARY[@]}"
	printf '%d passed, %d failed\n' "$TOTAL_PASSED" "$TOTAL_FAILED"
	[[ "$FAILURE" == false ]]
}

BINDIR=/usr/lib/postgresql/15/bin
MODE=all
main "$@"
