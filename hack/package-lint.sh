#!/usr/bin/env bash
# Checks the built packages without installing them (make package-lint,
# part of make test): hack/version.sh's rule; lintian on the .deb, where
# an error or a warning fails (overrides, each with its reason, are in
# packaging/debian/lintian-overrides); the .rpm as rpm reads it (files,
# licence, changelog, scripts); and one version in the package, the
# binaries and the man pages.
#
# usage: hack/package-lint.sh DEB VERSION   (the .rpm is found beside DEB)
set -euo pipefail
cd "$(dirname "$0")/.."
deb=${1:?usage: package-lint.sh DEB VERSION}
version=${2:?usage: package-lint.sh DEB VERSION}
fail() { echo "package-lint: FAIL: $*" >&2; exit 1; }
need() {
	command -v "$1" >/dev/null && return
	fail "$1 not found (apt-get install $2, or make deps)"
}
need lintian lintian
need rpm rpm
need dpkg-deb dpkg
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

sh hack/version-test.sh

[ -f "$deb" ] || fail "no $deb (make package)"
rpmfile=$(ls "$(dirname "$deb")"/startgate-"$version"-*.rpm 2>/dev/null | head -n 1)
[ -n "$rpmfile" ] || fail "no startgate-$version-*.rpm beside $deb"

# lintian refuses nothing as root but says so on every run; the findings
# are what count. --fail-on: errors and warnings, not info or pedantic.
out=$(lintian --fail-on error,warning "$deb" 2>&1 | grep -v '^running with root privileges' || true)
if ! lintian --fail-on error,warning "$deb" >/dev/null 2>&1; then
	echo "$out" >&2
	fail "lintian on $deb"
fi
[ -z "$out" ] || echo "$out"
echo "package-lint: lintian: $deb clean (errors and warnings)"

# The .deb: one version in its control file, its binaries and its pages.
[ "$(dpkg-deb -f "$deb" Version)" = "$version" ] || fail "the .deb's Version is $(dpkg-deb -f "$deb" Version), want $version"
dpkg-deb -x "$deb" "$tmp/deb"
got=$("$tmp/deb/usr/bin/startgatectl" version --client | sed -n 's/^client: \([^ ]*\) .*/\1/p')
[ "$got" = "$version" ] || fail "the .deb's startgatectl version --client says $got, want $version"
got=$("$tmp/deb/usr/bin/startgated" --version)
case $got in "startgated version $version "*) ;; *) fail "the .deb's startgated --version says \"$got\", want startgated version $version ..." ;; esac
for page in man1/startgatectl.1.gz man1/startgatectl-node-enable.1.gz man8/startgated.8.gz man8/startgated-config-check.8.gz; do
	[ -f "$tmp/deb/usr/share/man/$page" ] || fail "the .deb has no /usr/share/man/$page"
done
# Read whole, then matched: grep -q closing a pipe early would fail the
# writer (pipefail).
page=$(zcat "$tmp/deb/usr/share/man/man8/startgated.8.gz")
grep -q "startgate $version" <<<"$page" || fail "startgated(8) does not name version $version"
first=$(zcat "$tmp/deb/usr/share/doc/startgate/changelog.gz")
first=${first%%$'\n'*}
[[ $first == "startgate ($version) "* ]] || fail "the .deb's changelog does not start with an entry for $version: $first"
grep -q '^License: Apache-2.0$' "$tmp/deb/usr/share/doc/startgate/copyright" || fail "the .deb's copyright names no Apache-2.0 licence"
echo "package-lint: .deb: version $version in control, startgatectl, startgated, man pages and changelog"

# The .rpm, as rpm reads it.
q() { rpm -qp --nosignature "$@" "$rpmfile"; }
[ "$(q --qf '%{VERSION}')" = "$version" ] || fail "the .rpm's VERSION is $(q --qf '%{VERSION}'), want $version"
[ "$(q --qf '%{LICENSE}')" = Apache-2.0 ] || fail "the .rpm's License is $(q --qf '%{LICENSE}')"
files=$(q -l)
for f in /usr/bin/startgated /usr/bin/startgatectl /usr/lib/systemd/system/startgated.service \
	/usr/lib/systemd/system/startgated.socket /usr/lib/systemd/system/startgated-cri.socket \
	/usr/lib/systemd/system-preset/50-startgate.preset /usr/share/man/man1/startgatectl.1.gz \
	/usr/share/man/man8/startgated.8.gz /usr/share/licenses/startgate/LICENSE; do
	grep -qx "$f" <<<"$files" || fail "the .rpm has no $f"
done
grep -qx /usr/share/licenses/startgate/LICENSE <<<"$(q -L)" || fail "LICENSE is not the .rpm's %license"
changelog=$(q --changelog)
grep -qF -- "- $version" <<<"$changelog" || fail "the .rpm's %changelog has no entry for $version:
${changelog:0:300}"
scripts=$(q --scripts)
for s in postinstall preuninstall postuninstall; do
	grep -q "^$s scriptlet" <<<"$scripts" || fail "the .rpm has no $s scriptlet"
done
grep -q 'systemctl --no-reload preset' <<<"$scripts" || fail "the .rpm's %post does not preset the units"
grep -q 'release_kubelet$' <<<"$scripts" && grep -q '^release_kubelet() {' <<<"$scripts" ||
	fail "the .rpm's %preun does not define and call release_kubelet"
echo "package-lint: .rpm: version $version, Apache-2.0, %changelog, preset, scriptlets"
echo "package-lint: ok"
