#!/usr/bin/env bash
# valgrind-install.sh -- a PostgreSQL 15 installation whose server runs under
# valgrind's memcheck, for the valgrind pass of the tests (run-tests.sh
# valgrind). Debian ships no PostgreSQL built with assertions; memcheck on
# the installed server is the check that can be had here.
#
# Usage: scripts/valgrind-install.sh DEST LOGDIR
#
# DEST/bin holds links to the installed programs but for postgres, a script
# that runs the installed postgres under valgrind (following its forks:
# every backend and background worker), and pg_ctl, copied so that it
# starts that script (PostgreSQL looks for its programs next to the
# resolved path of the one running). The server itself resolves to the
# installed binary, so it loads the installed pg_workflow library. Each
# process writes its report to LOGDIR/PID.log; suppressions are
# test/valgrind.supp. Prints DEST (the install_path of
# PostgreSQL::Test::Cluster).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
DEST=${1:?usage: valgrind-install.sh DEST LOGDIR}
LOGDIR=${2:?usage: valgrind-install.sh DEST LOGDIR}
command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 1; }

bindir=$("$PG_CONFIG" --bindir)
rm -rf "$DEST"
mkdir -p "$DEST/bin" "$DEST/lib" "$LOGDIR"
for f in "$bindir"/*; do
	ln -s "$f" "$DEST/bin/$(basename "$f")"
done
rm -f "$DEST/bin/postgres" "$DEST/bin/postmaster" "$DEST/bin/pg_ctl"
cp "$bindir/pg_ctl" "$DEST/bin/pg_ctl"
cat >"$DEST/bin/postgres" <<SCRIPT
#!/bin/sh
# postgres under valgrind memcheck (scripts/valgrind-install.sh); initdb's
# bootstrap and single-user runs and pg_ctl's questions run as they are.
case " \$* " in
*" --boot "* | *" --single "* | *" -V "* | *" --version "* | *" -C "*)
	exec "$bindir/postgres" "\$@" ;;
esac
exec valgrind --quiet --tool=memcheck --trace-children=no --child-silent-after-fork=no \\
	--error-exitcode=0 --num-callers=30 --read-var-info=no \\
	--suppressions="$REPO/test/valgrind.supp" --gen-suppressions=all \\
	--log-file="$LOGDIR/%p.log" "$bindir/postgres" "\$@"
SCRIPT
chmod +x "$DEST/bin/postgres"
ln -s postgres "$DEST/bin/postmaster"
printf '%s\n' "$DEST"
