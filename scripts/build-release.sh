#!/usr/bin/env bash
# build-release.sh -- build a released version of pg_workflow, from the git
# history, into a PostgreSQL installation of its own, for the upgrade test
# (test/t/044_upgrade.pl runs that release's library, then this one's).
#
# Usage: scripts/build-release.sh VERSION DEST
#
# The commit of VERSION is read from src/sql/released/RELEASES. DEST gets a
# relocated copy of the PostgreSQL 15 installation (bin/ copied, since
# PostgreSQL finds its lib and share directories from where its binaries
# are; everything else linked) holding that release's library and scripts
# instead of the installed ones. Prints the installation's root (the
# install_path of PostgreSQL::Test::Cluster). Exits with 3, saying why, when
# the git history does not hold the commit (a shallow clone, or no .git).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
VERSION=${1:?usage: build-release.sh VERSION DEST}
DEST=${2:?usage: build-release.sh VERSION DEST}

log() { printf '[build-release] %s\n' "$*" >&2; }

commit=$(awk -v v="$VERSION" '$1 == v { print $2 }' "$REPO/src/sql/released/RELEASES")
[[ -n "$commit" ]] || { log "no release $VERSION in src/sql/released/RELEASES"; exit 2; }
if ! git -C "$REPO" cat-file -e "$commit^{tree}" 2>/dev/null; then
	log "the git history of $REPO does not hold $commit (release $VERSION)"
	exit 3
fi

bindir=$("$PG_CONFIG" --bindir)
pkglibdir=$("$PG_CONFIG" --pkglibdir)
sharedir=$("$PG_CONFIG" --sharedir)
rm -rf "$DEST"
mkdir -p "$DEST/src" "$DEST/root"
git -C "$REPO" archive "$commit" | tar -C "$DEST/src" -xf -
log "building release $VERSION ($commit)"
make -s -C "$DEST/src" -j"$(nproc)" PG_CONFIG="$PG_CONFIG" >&2
make -s -C "$DEST/src" install DESTDIR="$DEST/root" PG_CONFIG="$PG_CONFIG" >&2

# The rest of the installation, around what the release installed.
cp -a "$bindir/." "$DEST/root$bindir/"
for dir in "$pkglibdir" "$sharedir" "$sharedir/extension"; do
	mkdir -p "$DEST/root$dir"
	for f in "$dir"/*; do
		name=$(basename "$f")
		[[ -e "$DEST/root$dir/$name" || "$name" == pg_workflow* ]] && continue
		[[ -d "$f" && "$dir" == "$sharedir" && "$name" == extension ]] && continue
		ln -s "$f" "$DEST/root$dir/$name"
	done
done
"$DEST/root$bindir/pg_config" --version >/dev/null
printf '%s\n' "$(dirname "$DEST/root$bindir")"
