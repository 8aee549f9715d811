#!/usr/bin/env bash
# Checks the .deb on this machine (meant for a fresh Debian 12 root:
# ../shared/fresh/ci -- bash hack/package-check.sh): build two versions,
# install the first, startgated config check and systemd-analyze verify
# on what it installed, edit the config, upgrade to the second (the edit
# is kept), remove (binaries and units gone, the config kept), purge
# (the config gone). Installing must not touch kubelet: there is none
# here, and the scripts must not fail for it. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive PATH="$PATH:/usr/local/go/bin"
fail() { echo "package-check: FAIL: $*" >&2; exit 1; }

command -v make >/dev/null && command -v git >/dev/null && command -v systemd-analyze >/dev/null ||
	{ apt-get update && apt-get install -y --no-install-recommends make git systemd ca-certificates; }

rm -rf dist
make package PKG_VERSION=0.0.1 >/dev/null
make package PKG_VERSION=0.0.2 >/dev/null
arch=$(go env GOARCH)
deb1=dist/startgate_0.0.1_$arch.deb deb2=dist/startgate_0.0.2_$arch.deb
[ -f "$deb1" ] && [ -f "$deb2" ] || fail "no .deb in dist: $(ls dist)"
ls dist/*.rpm >/dev/null 2>&1 || fail "no .rpm in dist: $(ls dist)"

dpkg -i "$deb1"
for f in /usr/bin/startgated /usr/bin/startgatectl /usr/lib/systemd/system/startgated.service \
	/usr/lib/systemd/system/startgated.socket /usr/lib/systemd/system/startgated-cri.socket \
	/etc/startgate/config.toml /usr/share/bash-completion/completions/startgatectl; do
	[ -e "$f" ] || fail "$f not installed"
done
startgated config check >/dev/null || fail "startgated config check of the packaged config"
out=$(systemd-analyze verify /usr/lib/systemd/system/startgated.service /usr/lib/systemd/system/startgated.socket \
	/usr/lib/systemd/system/startgated-cri.socket 2>&1) || fail "systemd-analyze verify: $out"
if echo "$out" | grep -q startgate; then fail "systemd-analyze verify: $out"; fi
startgatectl version --client | grep -q "client:" || fail "startgatectl version"
startgatectl node status >/dev/null || fail "startgatectl node status on a node without kubelet"
echo "package-check: 0.0.1 installed; config check and systemd-analyze verify pass"

# An operator's edit survives the upgrade.
printf '\n[metrics]\nlisten = "127.0.0.1:9464"\n' >>/etc/startgate/config.toml
edited=$(sha256sum /etc/startgate/config.toml)
dpkg -i "$deb2"
[ "$(dpkg-query -W -f='${Version}' startgate)" = 0.0.2 ] || fail "not upgraded to 0.0.2"
[ "$(sha256sum /etc/startgate/config.toml)" = "$edited" ] || fail "the upgrade changed the edited /etc/startgate/config.toml"
startgated config check | grep -q 'listen = "127.0.0.1:9464"' || fail "the edited config does not check after the upgrade"
echo "package-check: upgraded to 0.0.2, the edited config kept"

dpkg -r startgate
[ ! -e /usr/bin/startgated ] && [ ! -e /usr/lib/systemd/system/startgated.service ] || fail "remove left the binaries or units"
[ "$(sha256sum /etc/startgate/config.toml)" = "$edited" ] || fail "remove did not keep the config"
dpkg --purge startgate
[ ! -e /etc/startgate/config.toml ] || fail "purge left /etc/startgate/config.toml"
echo "package-check: removed (config kept), purged (config gone)"
echo "package-check: ok"
