#!/usr/bin/env bash
# Checks the packages on this machine, installed as an image build would
# install them: offline, with systemd installed but not running (meant for
# a fresh Debian 12 root: ../shared/fresh/ci -- bash hack/package-check.sh;
# hack/boot-check.sh does the same under a running systemd). Needs root.
#
# Two versions, as hack/version.sh gives them: this commit's, and a
# commit on top of it (in a scratch clone), so that the upgrade is the one
# a node sees when main moves on. The .deb:
#   install: files, man pages, copyright, changelog; one version in dpkg,
#     startgatectl, startgated and its build_info metric; the three units
#     enabled (their symlinks) though systemd does not run; kubelet
#     untouched (there is none); config check and systemd-analyze verify
#   upgrade: the edited config kept; the units still enabled, and one the
#     admin disabled still disabled
#   remove: refused while kubelet points at startgated's socket, and only
#     then; goes on when kubelet's files were restored but kubelet could
#     not be restarted, and with a broken record; binaries and units gone,
#     the config kept
#   purge: config, enablement and /var/lib/startgate gone
# The .rpm (rpm from Debian, its own database): install enables the units
# by preset, an upgrade keeps an admin's disable, erase disables them.
set -euo pipefail
# Own PID namespace: startgatectl looks for a running kubelet, and a
# kubelet that another test runs on this machine is not this node's.
if [ -z "${PACKAGE_CHECK_PIDNS:-}" ]; then
	exec env PACKAGE_CHECK_PIDNS=1 unshare --pid --fork --mount-proc bash "$0" "$@"
fi
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive PATH="$PATH:/usr/local/go/bin"
fail() { echo "package-check: FAIL: $*" >&2; exit 1; }
say() { echo "package-check: $*"; }

missing=
for c in make:make git:git systemd-analyze:systemd curl:curl rpm:rpm; do
	command -v "${c%%:*}" >/dev/null || missing="$missing ${c#*:}"
done
if [ -n "$missing" ]; then
	apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing ca-certificates >/dev/null
fi
[ -d /run/systemd/system ] && fail "systemd runs here: this check is of an offline install (hack/boot-check.sh is the one under systemd)"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
arch=$(go env GOARCH)

# build DIR: make package in DIR; prints the version.
build() {
	local v
	v=$(sh hack/version.sh "$1")
	(cd "$1" && rm -rf dist && make package >"$tmp/make.log" 2>&1) || { tail -n 30 "$tmp/make.log"; fail "make package in $1"; }
	echo "$v"
}
v1=$(build .)
git clone -q . "$tmp/later"
git -C "$tmp/later" -c user.name=package-check -c user.email=package-check@example.com commit -q --allow-empty -m "a later commit"
v2=$(build "$tmp/later")
deb1=dist/startgate_${v1}_$arch.deb deb2=$tmp/later/dist/startgate_${v2}_$arch.deb
rpm1=$(ls dist/startgate-"$v1"-*.rpm) rpm2=$(ls "$tmp"/later/dist/startgate-"$v2"-*.rpm)
[ -f "$deb1" ] && [ -f "$deb2" ] || fail "no .deb: $(ls dist "$tmp/later/dist")"
dpkg --compare-versions "$v1" lt "$v2" || fail "$v2 (a later commit) does not upgrade $v1"
say "built $v1 and $v2 (a commit later)"

units="startgated.socket startgated-cri.socket startgated.service"
# link UNIT: where enabling UNIT puts its symlink.
link() {
	case $1 in
	*.socket) echo /etc/systemd/system/sockets.target.wants/$1 ;;
	*.service) echo /etc/systemd/system/multi-user.target.wants/$1 ;;
	esac
}
enabled() { [ -L "$(link "$1")" ]; }
expectEnabled() {
	for u in "$@"; do enabled "$u" || fail "$u not enabled after $step: no $(link "$u")"; done
}

# checkVersion V: dpkg (or rpm), startgatectl, startgated and build_info all say V.
checkVersion() {
	local v=$1 got port=19464 pid metrics=
	got=$(startgatectl version --client | sed -n 's/^client: \([^ ]*\) .*/\1/p')
	[ "$got" = "$v" ] || fail "startgatectl version --client says $got, want $v"
	got=$(startgated --version)
	case $got in "startgated version $v "*) ;; *) fail "startgated --version says \"$got\", want $v" ;; esac
	startgated --socket "$tmp/sg.sock" --cri-socket "$tmp/cri.sock" --metrics-listen "127.0.0.1:$port" 2>"$tmp/daemon.log" &
	pid=$!
	for _ in $(seq 100); do
		metrics=$(curl -sf "http://127.0.0.1:$port/metrics" 2>/dev/null) && break
		sleep 0.1
	done
	kill "$pid" && wait "$pid" || true
	[ -n "$metrics" ] || fail "no metrics from startgated on 127.0.0.1:$port: $(tail -n 5 "$tmp/daemon.log")"
	got=$(grep '^startgate_build_info{' <<<"$metrics" || true)
	grep -qF ",version=\"$v\"" <<<"$got" || grep -qF "{version=\"$v\"" <<<"$got" ||
		fail "build_info does not say version $v: $(grep build_info <<<"$metrics")"
}

# --- .deb: install offline ---
step="dpkg -i $v1"
dpkg -i "$deb1" >/dev/null
for f in /usr/bin/startgated /usr/bin/startgatectl /usr/lib/systemd/system/startgated.service \
	/usr/lib/systemd/system/startgated.socket /usr/lib/systemd/system/startgated-cri.socket \
	/etc/startgate/config.toml /usr/share/bash-completion/completions/startgatectl \
	/usr/share/man/man1/startgatectl.1.gz /usr/share/man/man1/startgatectl-node-disable.1.gz \
	/usr/share/man/man8/startgated.8.gz /usr/share/doc/startgate/copyright \
	/usr/share/doc/startgate/changelog.gz /usr/share/doc/startgate/dependencies.gz; do
	[ -e "$f" ] || fail "$f not installed"
done
[ ! -e /var/lib/startgate ] || fail "installing created /var/lib/startgate (node enable does)"
grep -q '^Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/' /usr/share/doc/startgate/copyright ||
	fail "/usr/share/doc/startgate/copyright is not DEP-5"
# Read whole, then matched: grep -q or head closing a pipe early would
# fail the writer (pipefail).
first=$(zcat /usr/share/doc/startgate/changelog.gz)
first=${first%%$'\n'*}
[[ $first == "startgate ($v1) "* ]] || fail "changelog.gz does not start with an entry for $v1: $first"
man -w startgatectl-node-enable >/dev/null 2>&1 || [ ! -x /usr/bin/man ] || fail "man does not find startgatectl-node-enable"
[ "$(dpkg-query -W -f='${Version}' startgate)" = "$v1" ] || fail "dpkg-query says $(dpkg-query -W -f='${Version}' startgate), want $v1"
checkVersion "$v1"
expectEnabled $units
startgated config check >/dev/null || fail "startgated config check of the packaged config"
out=$(systemd-analyze verify /usr/lib/systemd/system/startgated.service /usr/lib/systemd/system/startgated.socket \
	/usr/lib/systemd/system/startgated-cri.socket 2>&1) || fail "systemd-analyze verify: $out"
if grep -q startgate <<<"$out"; then fail "systemd-analyze verify: $out"; fi
# No kubelet here: status may say so, but must say it plainly.
out=$(startgatectl node status 2>&1) || grep -q "no kubelet" <<<"$out" || fail "startgatectl node status on a node without kubelet: $out"
say "$v1 installed offline: files, man pages, copyright, changelog; dpkg, startgatectl, startgated and build_info say $v1; $units enabled"

# --- upgrade: the admin's edit and disable survive ---
printf '\n[metrics]\nlisten = "127.0.0.1:9464"\n' >>/etc/startgate/config.toml
edited=$(sha256sum /etc/startgate/config.toml)
systemctl disable startgated-cri.socket >/dev/null 2>&1
enabled startgated-cri.socket && fail "systemctl disable startgated-cri.socket left it enabled"
step="dpkg -i $v2 (upgrade)"
dpkg -i "$deb2" >/dev/null
[ "$(dpkg-query -W -f='${Version}' startgate)" = "$v2" ] || fail "not upgraded to $v2"
checkVersion "$v2"
[ "$(sha256sum /etc/startgate/config.toml)" = "$edited" ] || fail "the upgrade changed the edited /etc/startgate/config.toml"
out=$(startgated config check)
grep -q 'listen = "127.0.0.1:9464"' <<<"$out" || fail "the edited config does not check after the upgrade"
expectEnabled startgated.socket startgated.service
enabled startgated-cri.socket && fail "the upgrade enabled startgated-cri.socket, which the admin had disabled"
systemctl enable startgated-cri.socket >/dev/null 2>&1
say "upgraded to $v2: the edited config kept, startgated-cri.socket still disabled as the admin left it, the rest enabled"

# --- remove: refused only while kubelet would be left on startgated's socket ---
# A kubeadm-style kubelet: its unit names its config file (it need not run).
mkdir -p /var/lib/kubelet /etc/systemd/system
printf '[Unit]\nDescription=kubelet\n[Service]\nExecStart=/usr/bin/kubelet --config=/var/lib/kubelet/config.yaml\n[Install]\nWantedBy=multi-user.target\n' \
	>/etc/systemd/system/kubelet.service
kcfg=/var/lib/kubelet/config.yaml
printf 'apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\ncontainerRuntimeEndpoint: unix:///run/containerd/containerd.sock\n' >"$kcfg"
orig=$(sha256sum "$kcfg")
sed 's#unix:///run/containerd/containerd.sock#unix:///run/startgate/cri.sock#' "$kcfg" >"$tmp/byhand.yaml"
cp "$tmp/byhand.yaml" "$kcfg"
# Pointed there by hand, and node disable cannot write kubelet's config (a
# read-only mount): removing would leave kubelet on a socket nobody serves.
mount --bind /var/lib/kubelet /var/lib/kubelet && mount -o remount,bind,ro /var/lib/kubelet ||
	fail "cannot mount /var/lib/kubelet read-only to make node disable fail"
if dpkg -r startgate >"$tmp/remove.log" 2>&1; then
	umount /var/lib/kubelet
	fail "dpkg -r went on while kubelet pointed at startgated's socket:
$(cat "$tmp/remove.log")"
fi
umount /var/lib/kubelet
grep -q "removal stops here" "$tmp/remove.log" || fail "the refused removal does not say why: $(cat "$tmp/remove.log")"
# dpkg keeps the wish (deinstall) and the package (installed).
[ "$(dpkg-query -W -f='${db:Status-Status}' startgate)" = installed ] ||
	fail "after the refused removal the package is $(dpkg-query -W -f='${Status}' startgate), want installed"
expectEnabled $units
say "dpkg -r refused while kubelet pointed at startgated's socket and node disable failed; the package stays installed and enabled"
# Switched by node enable, and kubelet cannot be restarted (no systemd):
# the files are put back, the restart fails, and the removal goes on.
printf 'apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\ncontainerRuntimeEndpoint: unix:///run/containerd/containerd.sock\n' >"$kcfg"
startgatectl node enable --force >/dev/null
out=$(startgatectl node status -o json)
grep -q '"enabled": true' <<<"$out" || fail "node enable --force did not switch $kcfg"
step="dpkg -r"
dpkg -r startgate >"$tmp/remove.log" 2>&1 || fail "dpkg -r failed with kubelet's files restorable:
$(cat "$tmp/remove.log")"
[ "$(sha256sum "$kcfg")" = "$orig" ] || fail "dpkg -r did not restore $kcfg byte for byte"
grep -q "systemctl restart kubelet" "$tmp/remove.log" || fail "dpkg -r does not say to restart kubelet after the failed restart: $(cat "$tmp/remove.log")"
[ ! -e /usr/bin/startgated ] && [ ! -e /usr/lib/systemd/system/startgated.service ] || fail "remove left the binaries or units"
[ "$(sha256sum /etc/startgate/config.toml)" = "$edited" ] || fail "remove did not keep the config"
say "dpkg -r with kubelet switched and no way to restart it: $kcfg restored byte for byte, the restart to do said, removed (config kept)"

# A reinstall after remove: the units come back enabled (remove masked, not disabled, them).
step="dpkg -i $v2 after remove"
dpkg -i "$deb2" >/dev/null
expectEnabled $units
for u in $units; do [ ! -L "/etc/systemd/system/$u" ] || fail "$u still masked after the reinstall"; done
# A broken record: disable fails, kubelet's files do not point at
# startgated, and the removal goes on.
mkdir -p /var/lib/startgate/kubelet
echo '{not json' >/var/lib/startgate/kubelet/state.json
dpkg -r startgate >"$tmp/remove.log" 2>&1 || fail "dpkg -r failed on a broken record while kubelet points at containerd:
$(cat "$tmp/remove.log")"
say "reinstalled after remove: enabled again; dpkg -r with a broken record went on: $(grep -c startgate: "$tmp/remove.log") lines said why"

step="dpkg --purge"
dpkg --purge startgate >/dev/null
[ ! -e /etc/startgate/config.toml ] || fail "purge left /etc/startgate/config.toml"
[ ! -e /var/lib/startgate ] || fail "purge left /var/lib/startgate"
left=$(find /etc/systemd/system /var/lib/systemd/deb-systemd-helper-enabled /var/lib/systemd/deb-systemd-helper-masked -name 'startgate*' 2>/dev/null || true)
[ -z "$left" ] || fail "purge left enablement or masks behind: $left"
say "removed (config kept), purged (config, enablement, masks and /var/lib/startgate gone)"

# --- .rpm (rpm's own database; Debian's rpm warns that it is not dpkg) ---
# On a node without kubelet, this time.
rm -rf /etc/systemd/system/kubelet.service /etc/systemd/system/kubelet.service.d /var/lib/kubelet
# rpm -q prints "package startgate is not installed" to stdout when it is not.
rpmq() { rpm -q --qf '%{VERSION}' startgate 2>/dev/null || true; }
step="rpm -i $v1"
rpm -i --nodeps --nosignature "$rpm1" >"$tmp/rpm.log" 2>&1 || fail "rpm -i: $(cat "$tmp/rpm.log")"
[ "$(rpmq)" = "$v1" ] || fail "rpm -q says $(rpmq), want $v1"
checkVersion "$v1"
[ -f /usr/lib/systemd/system-preset/50-startgate.preset ] && [ -f /usr/share/licenses/startgate/LICENSE ] || fail "rpm -i: no preset or LICENSE"
expectEnabled $units
systemctl disable startgated-cri.socket >/dev/null 2>&1
step="rpm -U $v2"
rpm -U --nodeps --nosignature "$rpm2" >"$tmp/rpm.log" 2>&1 || fail "rpm -U: $(cat "$tmp/rpm.log")"
[ "$(rpmq)" = "$v2" ] || fail "rpm -q says $(rpmq) after the upgrade, want $v2"
expectEnabled startgated.socket startgated.service
enabled startgated-cri.socket && fail "rpm -U enabled startgated-cri.socket, which the admin had disabled"
step="rpm -e"
rpm -e --nodeps startgate >"$tmp/rpm.log" 2>&1 || fail "rpm -e: $(cat "$tmp/rpm.log")"
! rpm -q startgate >/dev/null 2>&1 || fail "rpm -e left startgate installed"
[ ! -e /usr/bin/startgated ] || fail "rpm -e left /usr/bin/startgated"
for u in $units; do ! enabled "$u" || fail "rpm -e left $u enabled"; done
say "rpm: $v1 installed offline with the units enabled by preset, upgraded to $v2 keeping the admin's disable, erased (units disabled)"
say "ok"
