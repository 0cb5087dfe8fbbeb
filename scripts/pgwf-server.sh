#!/usr/bin/env bash
# pgwf-server.sh -- start, use and stop a throwaway PostgreSQL 15 server with
# pg_workflow preloaded and the extension created in database "postgres".
# Used by scripts/demo.sh and the benchmarks; handy for manual testing.
#
# Usage:
#   pgwf-server.sh start   DIR PORT [CONF_LINE...]  initdb DIR if needed, start, CREATE EXTENSION
#   pgwf-server.sh stop    DIR [fast|immediate|smart] stop the server (no error if not running)
#   pgwf-server.sh psql    DIR PORT [PSQL_ARG...]  psql as postgres to database postgres
#   pgwf-server.sh status  DIR                     is the server running?
#   pgwf-server.sh destroy DIR                     stop the server and delete DIR
#
# Layout: DIR is the data directory (owned by postgres, mode 0700), the Unix
# socket lives in DIR itself (no TCP: listen_addresses = ''), the server log is
# DIR/server.log, and the settings written by this script are in DIR/pgwf.conf
# (included from DIR/postgresql.conf, rewritten at every start). Extra
# CONF_LINEs such as "pg_workflow.workers = 4" are appended to pgwf.conf, so
# they override the defaults. An existing cluster in DIR is reused (its data
# is kept), which lets crash tests stop -m immediate and start again.
#
# Works as root (runs the PostgreSQL programs as user postgres via runuser)
# or as an ordinary user (runs them as that user; the database superuser is
# always named postgres). Set PG_CONFIG to use another installation.
set -euo pipefail

PROG=$(basename "$0")
log() { printf '[pgwf-server] %s\n' "$*"; }
die() { printf '[pgwf-server] ERROR: %s\n' "$*" >&2; exit 1; }

usage() {
	# The header comment, without the '# '.
	awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
}

find_bindir() {
	local pg_config=${PG_CONFIG:-}
	if [[ -z "$pg_config" ]]; then
		if [[ -x /usr/lib/postgresql/15/bin/pg_config ]]; then
			pg_config=/usr/lib/postgresql/15/bin/pg_config
		else
			pg_config=$(command -v pg_config || true)
		fi
	fi
	[[ -n "$pg_config" ]] || die "pg_config not found: install postgresql-server-dev-15 (scripts/install-deps.sh)"
	"$pg_config" --bindir
}

# Run a command as the user that owns the cluster: postgres when we are root,
# ourselves otherwise. Runs from / so that the server programs never complain
# about an unreadable current directory (e.g. /root).
as_pg() {
	if [[ "$(id -u)" -eq 0 ]]; then
		(cd / && runuser -u postgres -- env HOME="$PG_HOME" PATH="$BINDIR:$PATH" "$@")
	else
		(cd / && env PATH="$BINDIR:$PATH" "$@")
	fi
}

abs_dir() {
	[[ -n "$1" ]] || die "DIR must not be empty"
	realpath -m -- "$1"
}

check_port() {
	[[ "$1" =~ ^[0-9]+$ ]] && (("$1" >= 1024 && "$1" <= 65535)) ||
		die "PORT must be a number between 1024 and 65535, got '$1'"
}

is_cluster() { [[ -f "$1/PG_VERSION" ]]; }

is_running() {
	is_cluster "$1" && [[ -f "$1/postmaster.pid" ]] &&
		as_pg pg_ctl -D "$1" status >/dev/null 2>&1
}

show_log_tail() {
	if [[ -f "$1/server.log" ]]; then
		log "last lines of $1/server.log:"
		tail -n "${2:-40}" "$1/server.log" | sed 's/^/    /' >&2
	fi
}

make_dir() {
	local dir=$1
	if [[ -e "$dir" && ! -d "$dir" ]]; then
		die "$dir exists and is not a directory"
	fi
	if [[ -d "$dir" ]] && ! is_cluster "$dir" && [[ -n "$(ls -A "$dir")" ]]; then
		die "$dir exists, is not empty and holds no cluster: refusing to use it"
	fi
	mkdir -p "$dir"
	if [[ "$(id -u)" -eq 0 ]]; then
		chown postgres:postgres "$dir"
	fi
	chmod 0700 "$dir"
}

write_conf() {
	local dir=$1 port=$2
	shift 2
	local conf="$dir/pgwf.conf"
	{
		echo "# Written by scripts/pgwf-server.sh at every start; edits are lost."
		echo "port = $port"
		echo "listen_addresses = ''"
		echo "unix_socket_directories = '$dir'"
		echo "shared_preload_libraries = 'pg_workflow'"
		echo "pg_workflow.database = 'postgres'"
		echo "pg_workflow.workers = 2"
		echo "logging_collector = off"
		echo "log_line_prefix = '%m [%p] %q%u@%d '"
		if (($# > 0)); then
			echo "# extra settings given on the command line"
			printf '%s\n' "$@"
		fi
	} >"$conf"
	if [[ "$(id -u)" -eq 0 ]]; then
		chown postgres:postgres "$conf"
	fi
	if ! grep -q "^include 'pgwf.conf'" "$dir/postgresql.conf"; then
		printf "\n# pg_workflow throwaway server settings\ninclude 'pgwf.conf'\n" >>"$dir/postgresql.conf"
	fi
}

run_psql() {
	local dir=$1 port=$2
	shift 2
	as_pg psql -X -h "$dir" -p "$port" -U postgres -d postgres "$@"
}

cmd_start() {
	(($# >= 2)) || die "usage: $PROG start DIR PORT [CONF_LINE...]"
	local dir port
	dir=$(abs_dir "$1")
	port=$2
	shift 2
	check_port "$port"
	# Unix socket paths are limited to 107 bytes.
	((${#dir} + ${#port} + 11 <= 107)) || die "DIR is too long for a Unix socket path: $dir"
	if is_running "$dir"; then
		die "a server is already running in $dir (stop it first: $PROG stop $dir)"
	fi

	make_dir "$dir"
	if is_cluster "$dir"; then
		log "reusing the existing cluster in $dir"
	else
		log "initdb $dir"
		local initdb_log
		initdb_log=$(mktemp)
		if ! as_pg initdb -D "$dir" -U postgres -A trust -E UTF8 --locale=C >"$initdb_log" 2>&1; then
			cat "$initdb_log" >&2
			rm -f "$initdb_log"
			die "initdb failed"
		fi
		rm -f "$initdb_log"
	fi
	write_conf "$dir" "$port" "$@"

	log "starting the server (port $port, socket in $dir, log $dir/server.log)"
	if ! as_pg pg_ctl -D "$dir" -l "$dir/server.log" -w -t 60 start >/dev/null; then
		show_log_tail "$dir"
		die "the server did not start (is pg_workflow installed? run: make install)"
	fi

	log "CREATE EXTENSION pg_workflow in database postgres"
	if ! run_psql "$dir" "$port" -q -v ON_ERROR_STOP=1 \
		-c 'CREATE EXTENSION IF NOT EXISTS pg_workflow'; then
		show_log_tail "$dir"
		as_pg pg_ctl -D "$dir" -m fast -w stop >/dev/null 2>&1 || true
		die "CREATE EXTENSION pg_workflow failed; the server was stopped"
	fi
	log "ready: $PROG psql $dir $port   (or: psql -h $dir -p $port -U postgres postgres)"
}

cmd_stop() {
	(($# >= 1 && $# <= 2)) || die "usage: $PROG stop DIR [fast|immediate|smart]"
	local dir mode=${2:-fast}
	dir=$(abs_dir "$1")
	case "$mode" in fast | immediate | smart) ;; *) die "unknown stop mode '$mode'" ;; esac
	if ! is_cluster "$dir"; then
		log "no cluster in $dir: nothing to stop"
		return 0
	fi
	if ! is_running "$dir"; then
		log "the server in $dir is not running"
		return 0
	fi
	log "stopping the server in $dir (mode $mode)"
	as_pg pg_ctl -D "$dir" -m "$mode" -w -t 60 stop >/dev/null
}

cmd_status() {
	(($# == 1)) || die "usage: $PROG status DIR"
	local dir
	dir=$(abs_dir "$1")
	if is_running "$dir"; then
		log "running in $dir"
	else
		log "not running in $dir"
		return 3
	fi
}

cmd_destroy() {
	(($# == 1)) || die "usage: $PROG destroy DIR"
	local dir
	dir=$(abs_dir "$1")
	[[ -e "$dir" ]] || { log "$dir does not exist: nothing to destroy"; return 0; }
	# Only delete what this script created.
	if ! is_cluster "$dir" || [[ ! -f "$dir/pgwf.conf" ]]; then
		die "$dir was not created by $PROG (no PG_VERSION or pgwf.conf): not deleting it"
	fi
	cmd_stop "$dir" fast
	log "deleting $dir"
	rm -rf -- "$dir"
}

cmd_psql() {
	(($# >= 2)) || die "usage: $PROG psql DIR PORT [PSQL_ARG...]"
	local dir port
	dir=$(abs_dir "$1")
	port=$2
	shift 2
	check_port "$port"
	run_psql "$dir" "$port" "$@"
}

main() {
	(($# >= 1)) || { usage >&2; exit 2; }
	local cmd=$1
	shift
	if [[ "$(id -u)" -eq 0 ]]; then
		getent passwd postgres >/dev/null || die "user postgres does not exist (run scripts/install-deps.sh)"
		PG_HOME=$(getent passwd postgres | cut -d: -f6)
	fi
	case "$cmd" in
	-h | --help | help) usage; exit 0 ;;
	start | stop | psql | status | destroy) ;;
	*) usage >&2; die "unknown command '$cmd'" ;;
	esac
	BINDIR=$(find_bindir)
	"cmd_$cmd" "$@"
}

PG_HOME=${HOME:-/}
BINDIR=
main "$@"
