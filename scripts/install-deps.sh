#!/usr/bin/env bash
# install-deps.sh -- install the Debian 12 packages needed to build and test
# pg_workflow (PostgreSQL 15 server + headers, libcurl, the TAP test modules'
# IPC::Run, a C toolchain, python3, perl, and graphviz for the monitor test
# that renders wf_graph's DOT; Node.js and npm for the Node example agent;
# valgrind for the memcheck pass).
#
# Usage (as root): bash scripts/install-deps.sh [--force]
#
# Idempotent. When every package is already installed it does nothing (fast
# reruns for developers); with --force, FORCE=1 or CI=true it always runs
# `apt-get update` and `apt-get install`.
#
# It never needs a system PostgreSQL cluster: when postgresql-15 is not
# installed yet it tells postgresql-common not to create the "main" cluster
# (create_main_cluster = false) before installing it. The tests start their
# own throwaway servers.
set -euo pipefail

PACKAGES=(
	postgresql-15
	postgresql-server-dev-15
	libcurl4-openssl-dev
	libipc-run-perl
	make
	gcc
	python3
	python3-psycopg
	perl
	graphviz
	valgrind
)
# Node.js and npm for the Node example agent (examples/agents/agent.js) and
# its one npm package, pg: Debian's, unless a node is installed already.
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || PACKAGES+=(nodejs npm)
CREATECLUSTER_DIR=/etc/postgresql-common/createcluster.d
CREATECLUSTER_DROPIN="$CREATECLUSTER_DIR/50-pg_workflow-no-main-cluster.conf"
CREATECLUSTER_CONF=/etc/postgresql-common/createcluster.conf

log() { printf '[install-deps] %s\n' "$*"; }
die() { printf '[install-deps] ERROR: %s\n' "$*" >&2; exit 1; }

usage() {
	# The header comment, without the '# '.
	awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
}

is_installed() {
	# dpkg's abbreviated status is "ii " for a fully installed package.
	local status
	status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null || true)
	[[ "$status" == ii* ]]
}

missing_packages() {
	local pkg
	for pkg in "${PACKAGES[@]}"; do
		is_installed "$pkg" || printf '%s\n' "$pkg"
	done
}

# Run a command up to 3 times (mirrors occasionally hiccup on fresh machines).
retry() {
	local n
	for n in 1 2 3; do
		if "$@"; then
			return 0
		fi
		log "attempt $n of 3 failed: $*"
		sleep $((n * 5))
	done
	return 1
}

apt_get() {
	apt-get -q -o Dpkg::Use-Pty=0 -o DPkg::Lock::Timeout=300 -o Acquire::Retries=3 "$@" </dev/null
}

# Keep Debian's postgresql-15 package from creating (and starting) a "main"
# cluster on port 5432. Only done before postgresql-15 is first installed.
avoid_main_cluster() {
	if is_installed postgresql-15; then
		return 0
	fi
	log "postgresql-15 is not installed yet: disabling creation of the 'main' cluster"
	mkdir -p "$CREATECLUSTER_DIR"
	printf '%s\n' \
		'# Written by pg_workflow scripts/install-deps.sh: the tests start their own' \
		'# servers and never need a system cluster.' \
		'create_main_cluster = false' >"$CREATECLUSTER_DROPIN"
	log "wrote $CREATECLUSTER_DROPIN"
	# Older createcluster.conf files may not include createcluster.d: then set
	# the option in the file itself.
	if [[ -f "$CREATECLUSTER_CONF" ]] &&
		! grep -q "^[[:space:]]*include_dir[[:space:]]*=\?[[:space:]]*'$CREATECLUSTER_DIR'" "$CREATECLUSTER_CONF"; then
		log "setting create_main_cluster = false in $CREATECLUSTER_CONF (restored after the install)"
		cp -p "$CREATECLUSTER_CONF" "$CREATECLUSTER_CONF.pg_workflow-orig"
		if grep -q '^[#[:space:]]*create_main_cluster' "$CREATECLUSTER_CONF"; then
			sed -i 's/^[#[:space:]]*create_main_cluster.*/create_main_cluster = false/' "$CREATECLUSTER_CONF"
		else
			echo 'create_main_cluster = false' >>"$CREATECLUSTER_CONF"
		fi
	fi
}

# A running system cluster is harmless (the tests never use it), but on CI it
# only costs memory and CPU: stop it there. Developers' clusters are left alone.
# Undoes avoid_main_cluster once the packages are in: the setting was for
# this install only, and a later "apt-get install postgresql-NN" (or
# pg_createcluster) must behave as Debian documents.
restore_main_cluster() {
	if [[ -f "$CREATECLUSTER_DROPIN" ]]; then
		rm -f "$CREATECLUSTER_DROPIN"
		log "removed $CREATECLUSTER_DROPIN"
	fi
	if [[ -f "$CREATECLUSTER_CONF.pg_workflow-orig" ]]; then
		mv -f "$CREATECLUSTER_CONF.pg_workflow-orig" "$CREATECLUSTER_CONF"
		log "restored $CREATECLUSTER_CONF"
	fi
	if command -v pg_lsclusters >/dev/null 2>&1 && [[ -z "$(pg_lsclusters --no-header 2>/dev/null)" ]]; then
		log "note: no Debian cluster exists; 'pg_createcluster 15 main --start' makes one (see README, Installing)"
	fi
}

report_system_clusters() {
	command -v pg_lsclusters >/dev/null 2>&1 || return 0
	local -a online
	mapfile -t online < <(pg_lsclusters --no-header 2>/dev/null | awk '$4 ~ /^online/ {print $1 "/" $2}' || true)
	local cluster
	for cluster in "${online[@]}"; do
		if [[ "${CI:-}" == "true" ]]; then
			log "CI: stopping system cluster $cluster (the tests do not use it)"
			pg_ctlcluster "${cluster%/*}" "${cluster#*/}" stop || log "could not stop $cluster (ignored)"
		else
			log "note: system cluster $cluster is running; the tests do not use it"
		fi
	done
}

verify() {
	local pg_config=/usr/lib/postgresql/15/bin/pg_config
	[[ -x "$pg_config" ]] || die "$pg_config is missing after installation"
	[[ -x /usr/lib/postgresql/15/lib/pgxs/src/test/regress/pg_regress ]] ||
		die "pg_regress (postgresql-server-dev-15) is missing"
	[[ -f /usr/lib/postgresql/15/lib/pgxs/src/test/perl/PostgreSQL/Test/Cluster.pm ]] ||
		die "PostgreSQL::Test::Cluster (postgresql-server-dev-15) is missing"
	perl -MIPC::Run -e 1 2>/dev/null || die "perl module IPC::Run is not loadable"
	command -v prove >/dev/null || die "prove (perl) is missing"
	command -v python3 >/dev/null || die "python3 is missing"
	getent passwd postgres >/dev/null || die "user postgres does not exist"
	log "ok: $("$pg_config" --version), $(gcc --version | head -n 1), $(python3 --version 2>&1), perl $(perl -e 'print $^V')"
}

main() {
	local force=false
	case "${1:-}" in
	"") ;;
	--force) force=true ;;
	-h | --help) usage; exit 0 ;;
	*) die "unknown argument '$1' (try --help)" ;;
	esac
	[[ "${FORCE:-}" == 1 || "${CI:-}" == "true" ]] && force=true

	[[ "$(id -u)" -eq 0 ]] || die "must be run as root (or with sudo where it exists)"
	command -v apt-get >/dev/null || die "apt-get not found: this script supports Debian 12 only"

	local missing
	missing=$(missing_packages)
	if [[ -z "$missing" && "$force" == false ]]; then
		log "all packages already installed: ${PACKAGES[*]} (use --force to run apt-get anyway)"
	else
		if [[ -n "$missing" ]]; then
			log "missing packages: $(echo "$missing" | tr '\n' ' ')"
		else
			log "all packages installed; running apt-get anyway (forced or CI=true)"
		fi
		export DEBIAN_FRONTEND=noninteractive
		avoid_main_cluster
		trap restore_main_cluster EXIT
		log "apt-get update"
		retry apt_get update
		log "apt-get install -y --no-install-recommends ${PACKAGES[*]}"
		retry apt_get install -y --no-install-recommends \
			-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
			"${PACKAGES[@]}"
		missing=$(missing_packages)
		restore_main_cluster
		[[ -z "$missing" ]] || die "still not installed after apt-get: $missing"
	fi
	report_system_clusters
	verify
}

main "$@"
