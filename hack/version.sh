#!/bin/sh
# Prints the version of this checkout: the one string that the binaries
# (internal/version.Version, so `startgatectl version`, `startgated
# --version` and the build_info metric) and the .deb and .rpm carry.
#
#   HEAD is release tag vX.Y.Z           X.Y.Z
#   otherwise                            0.0.N+gSHA  (N: commits up to HEAD)
#   either, with uncommitted changes     ...+dirty / ...+gSHA.dirty
#
# N counts commits, so a later build of main upgrades an earlier one under
# dpkg's and rpm's version comparison alike; the commit follows a "+",
# which both order after the number and semver calls build metadata (nfpm
# and chglog parse the version as semver). A dirty tree orders just after
# its commit, so that a developer's test build upgrades the clean one.
#
# usage: hack/version.sh [DIR]   (DIR: a git checkout, default the current one)
set -eu
cd "${1:-.}"
if ! git rev-parse --git-dir >/dev/null 2>&1; then
	echo "version.sh: $(pwd) is not a git checkout: give make VERSION=X.Y.Z" >&2
	exit 1
fi
# A shallow clone's commit count would be the depth, and go backwards.
if [ "$(git rev-parse --is-shallow-repository)" = true ]; then
	echo "version.sh: $(pwd) is a shallow clone: the commit count is wrong; git fetch --unshallow" >&2
	exit 1
fi
# Changed or untracked (not ignored) files, as Go's vcs.modified counts them.
dirty=
[ -z "$(git status --porcelain --untracked-files=normal)" ] || dirty=dirty

if tag=$(git describe --tags --exact-match --match 'v[0-9]*.[0-9]*.[0-9]*' HEAD 2>/dev/null) &&
	expr "$tag" : 'v[0-9][0-9]*\.[0-9][0-9]*\.[0-9][0-9]*$' >/dev/null; then
	echo "${tag#v}${dirty:++$dirty}"
	exit 0
fi
n=$(git rev-list --count HEAD)
sha=$(git rev-parse --short=12 HEAD)
echo "0.0.$n+g$sha${dirty:+.$dirty}"
