#!/usr/bin/env bash
# Builds pod-pacemaker (github.com/woehrl01/pod-pacemaker), the nearest peer
# the rollout benchmark races (startgate-bench kube --modes pacemaker...),
# at a pinned commit, into a cache outside the work tree, and prints the
# directory holding its node daemon and CNI plugin.
#
# pod-pacemaker's repository has no licence file, so startgate neither
# copies its source nor fetches it for you: give this script a clone
#
#   git clone https://github.com/woehrl01/pod-pacemaker
#   PACEMAKER_SRC=$PWD/pod-pacemaker hack/pacemaker/build.sh
#
# (a bare clone or mirror works too). The commit below is taken from it
# with git archive; its Go dependencies come through the module proxy.
#
# usage: PACEMAKER_SRC=DIR hack/pacemaker/build.sh   (prints the bin dir)
set -euo pipefail
commit=79e42756b542ffad5ce258d235f4a3db9310c4a0 # v1.8.4, 2026-08-20
short=${commit:0:7}
cache=${XDG_CACHE_HOME:-$HOME/.cache}/startgate/pod-pacemaker/$short-$(go env GOVERSION)
if [ -x "$cache/node-daemon" ] && [ -x "$cache/cni-plugin" ]; then
	echo "$cache"
	exit 0
fi
src=${PACEMAKER_SRC:-}
[ -n "$src" ] || { echo "pacemaker/build.sh: set PACEMAKER_SRC to a clone of https://github.com/woehrl01/pod-pacemaker (it has no licence file: startgate does not fetch or copy it)" >&2; exit 2; }
gitdir=$(git -C "$src" rev-parse --git-dir 2>/dev/null) || gitdir=$src
case $gitdir in /*) ;; *) gitdir=$src/$gitdir ;; esac
git --git-dir="$gitdir" cat-file -e "$commit^{commit}" 2>/dev/null ||
	{ echo "pacemaker/build.sh: $src has no commit $commit (v1.8.4); git fetch there first" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git --git-dir="$gitdir" archive "$commit" | tar -x -C "$work"
echo "pacemaker/build.sh: building pod-pacemaker $short into $cache (about 3 minutes cold)" >&2
mkdir -p "$cache.tmp"
(
	cd "$work"
	export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=mod
	go build -trimpath -o "$cache.tmp/cni-plugin" ./cmd/cni-plugin
	go build -trimpath -o "$cache.tmp/node-daemon" ./cmd/node-daemon
)
echo "$commit" >"$cache.tmp/COMMIT"
rm -rf "$cache"
mv "$cache.tmp" "$cache"
echo "$cache"
