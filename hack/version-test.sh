#!/bin/sh
# Checks hack/version.sh's rule in a scratch repository, and that the
# versions it gives order as they should under dpkg and rpm: a later
# commit upgrades an earlier one, a dirty tree its commit, a release any
# 0.0.N build. Part of make package-lint.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "version-test: FAIL: $*" >&2; exit 1; }
v() { sh "$here/version.sh" "$tmp/r"; }

git init -q "$tmp/r"
g() { git -C "$tmp/r" -c user.name=t -c user.email=t@example.com "$@"; }
g commit -q --allow-empty -m one
g commit -q --allow-empty -m two
sha=$(g rev-parse --short=12 HEAD)
[ "$(v)" = "0.0.2+g$sha" ] || fail "two commits, no tag: got $(v), want 0.0.2+g$sha"
two=$(v)

echo x >"$tmp/r/new"
[ "$(v)" = "0.0.2+g$sha.dirty" ] || fail "an untracked file: got $(v), want 0.0.2+g$sha.dirty"
twodirty=$(v)
g add new
g commit -q -m three
three=$(v)
g tag v1.2.3
[ "$(v)" = 1.2.3 ] || fail "at tag v1.2.3: got $(v), want 1.2.3"
release=$(v)
echo y >>"$tmp/r/new"
[ "$(v)" = 1.2.3+dirty ] || fail "at tag v1.2.3 with a change: got $(v), want 1.2.3+dirty"
g checkout -q -- new
g tag -f v1.2.3-rc.1 >/dev/null
g tag -d v1.2.3 >/dev/null
case $(v) in 0.0.3+g*) ;; *) fail "at a tag that is not vX.Y.Z (v1.2.3-rc.1): got $(v), want 0.0.3+g..." ;; esac

# older newer: each pair must order so under dpkg, and rpm when present.
for pair in "$two $twodirty" "$twodirty $three" "$two $three" "$three $release" "0.0.9+gffff 0.0.10+gaaaa"; do
	set -- $pair
	dpkg --compare-versions "$1" lt "$2" || fail "dpkg orders $1 after $2"
	if command -v rpm >/dev/null; then
		c=$(rpm --eval "%{lua: print(rpm.vercmp('$1', '$2'))}")
		[ "$c" = -1 ] || fail "rpm orders $1 against $2 as $c, want -1"
	fi
done
echo "version-test: ok ($two < $twodirty < $three < $release under dpkg$(command -v rpm >/dev/null && echo ' and rpm'))"
