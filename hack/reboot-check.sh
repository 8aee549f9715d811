#!/usr/bin/env bash
# Proves on a node booted with a real systemd (PID 1) that kubelet keeps
# its runtime across reboots and restarts once `startgatectl node enable`
# pointed it at startgated, and that disable, failures half way and the
# package's removal give the node back as it was (issue 19).
#
# The node: a Debian 12 root booted by BOOT (by default hack/sysboot.sh,
# which boots this machine's own root over a throwaway layer), with
# Debian's containerd and runc, the project's .deb (make package), and kubeadm's
# kubelet layout (internal/kubelet/testdata/layouts/kubeadm) run by a real
# kubelet (hack/kubernetes/build.sh), standalone: no API server, its pods
# static. What it checks, one "reboot-check:" line each:
#   1. node enable --restart-kubelet switches the running kubelet; a pod
#      running before keeps running, a new one starts through startgated;
#   2. after a reboot, with no other command, systemd brings up
#      containerd, then startgated (its CRI socket held from sockets.target),
#      then kubelet, in that order and without an ordering cycle, and every
#      pod's sandbox is started again through the new daemon;
#   3. containerd, startgated and kubelet restarted in several orders (and
#      startgated stopped, to be started again by kubelet's next call on the
#      held socket), and the package installed over itself (an upgrade's
#      maintainer scripts): the pods keep running and a new pod starts
#      through startgated after each;
#   4. node disable --restart-kubelet puts every kubelet file back byte for
#      byte, and kubelet starts pods on containerd with startgated stopped;
#   5. failures on the real node: a full disk under the journal (enable
#      changes nothing), a drop-in directory that cannot be written (enable
#      stops after switching the config; disable undoes it), a config that
#      cannot be restored (disable stops half way; the next disable
#      finishes); files byte for byte each time;
#   6. dpkg -r with kubelet switched (prerm puts it back), dpkg --purge.
#
# usage: hack/reboot-check.sh      (root; 5 to 8 minutes; make reboot-check)
#   BOOT  the tool that boots such a root ("up", "exec", "cp", "reboot",
#         "down"; exit status 3 from "up": this machine cannot boot one).
#         Default hack/sysboot.sh; ../shared/fresh/boot boots a pristine
#         debootstrap'd root instead (its packages installed with apt).
#   REBOOT_CHECK_SKIP_UNABLE=1  (make test) on a machine that cannot boot
#         a node (not root, no overlayfs, no systemd), say why and exit 0
#         instead of failing; ignored when CI=true: CI must run the check
#   DEB   a startgate .deb to use instead of building one with make package
#   STARTGATE_KUBE_BIN  the directory holding kubelet (default: what
#         hack/kubernetes/build.sh prints, building it the first time)
#
# What the booted root needs that a VM does not:
# its disk is an overlayfs layer, on which containerd's overlayfs
# snapshotter cannot mount (overlayfs is not a valid upper layer), so the
# CRI uses the native snapshotter; systemd there manages cgroup v1 in its
# own cgroup namespace, where runc and a kubelet with cgroupfs and
# cgroupsPerQOS: false run as they do on these VMs. The root shares the
# machine's network namespace, so kubelet's ports are picked free here.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
boot=${BOOT:-$repo/hack/sysboot.sh}
# unable REASON: this machine cannot run the check at all.
unable() {
	if [ "${REBOOT_CHECK_SKIP_UNABLE:-}" = 1 ] && [ "${CI:-}" != true ]; then
		echo "reboot-check: not run because $*"
		exit 0
	fi
	echo "reboot-check: FAIL: cannot run here: $*" >&2
	exit 1
}
[ "$(id -u)" = 0 ] || unable "it needs root (systemd as PID 1 in new namespaces)"
name=sgreboot$$
tmp=$(mktemp -d)
fixture=$repo/internal/kubelet/testdata/layouts/kubeadm
# kubelet's files in kubeadm's layout: each must be byte for byte as before
# after every disable.
kubelet_files="/lib/systemd/system/kubelet.service /usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf /var/lib/kubelet/kubeadm-flags.env /etc/default/kubelet /var/lib/kubelet/config.yaml"
dropin=/etc/systemd/system/kubelet.service.d/90-startgate.conf
up=

cleanup() {
	[ -n "$up" ] && "$boot" down "$name" >/dev/null 2>&1 || true
	rm -rf "$tmp"
}
trap cleanup EXIT

say() { echo "reboot-check: $*"; }
inside() { "$boot" exec "$name" -- "$@"; }
put() { "$boot" cp "$name" "$1" "$2"; }

# context prints what explains a failure: the units' journals, the tasks,
# the switch's state.
context() {
	{
		for u in kubelet startgated startgated-cri.socket containerd; do
			echo "--- journalctl -u $u (last 20 lines)"
			inside journalctl -u "$u" -n 20 --no-pager -o short-precise 2>&1 || true
		done
		echo "--- systemctl status (failed units)"
		inside systemctl --failed --no-pager 2>&1 || true
		echo "--- ctr -n k8s.io tasks ls"
		inside ctr -n k8s.io tasks ls 2>&1 || true
		echo "--- startgatectl node status"
		inside startgatectl node status 2>&1 || true
	} | sed 's/^/    /' >&2
}
fail() {
	echo "reboot-check: FAIL: $*" >&2
	[ -n "$up" ] && context
	exit 1
}

# waitfor SECONDS CMD...: polls CMD until it succeeds; 1 on timeout.
waitfor() {
	local n=$(($1 * 2))
	shift
	for _ in $(seq "$n"); do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.5
	done
	return 1
}

# freeport picks a TCP port nothing listens on (the root shares this
# machine's network).
freeport() {
	local p
	for _ in $(seq 100); do
		p=$((20000 + RANDOM % 20000))
		[ -z "$(ss -Htln "sport = :$p")" ] && { echo "$p"; return 0; }
	done
	return 1
}

# --- the node, then what it gets from outside ------------------------------
start=$SECONDS
# up=1 first: down is harmless if up got nowhere, and cleans up if it got
# half way.
up=1
rc=0
"$boot" up "$name" >/dev/null 2>"$tmp/up.err" || rc=$?
case $rc in
0) ;;
3) unable "$boot $(sed 's/^sysboot: //' "$tmp/up.err")" ;;
*)
	cat "$tmp/up.err" >&2
	echo "reboot-check: FAIL: $boot up $name" >&2
	exit 1
	;;
esac
node=$(inside hostname)

if [ -n "${DEB:-}" ]; then
	deb=$DEB
else
	(cd "$repo" && make package) >"$tmp/package.log" 2>&1 || { tail -n 20 "$tmp/package.log" >&2; fail "make package"; }
	deb=$(ls -t "$repo"/dist/startgate_*.deb | head -n 1)
fi
kube_bin=${STARTGATE_KUBE_BIN:-$(cd "$repo" && bash hack/kubernetes/build.sh)}
[ -x "$kube_bin/kubelet" ] || fail "no kubelet in $kube_bin"
healthz=$(freeport) && kport=$(freeport) || fail "no free TCP port for kubelet"
[ "$healthz" != "$kport" ] || kport=$((healthz + 1))

# --- 1. the node: containerd, the package, kubeadm's kubelet ----------------

# containerd's CRI as ../shared/TESTBED.md says, and two local images (no
# registry is reachable): a pause image and busybox. Their processes exit on
# SIGTERM (a shell's trap), as a real pause does, so the node powers off
# without waiting for systemd's final SIGKILL.
cat >"$tmp/setup.sh" <<'EOF'
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
# A root booted from this machine's has them (make deps); a pristine
# debootstrap'd one gets them from Debian.
missing=
for p in containerd runc busybox-static e2fsprogs iproute2 curl jq; do
	dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing="$missing $p"
done
if [ -n "$missing" ]; then
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends $missing >/tmp/apt.log 2>&1 ||
		{ tail -n 20 /tmp/apt.log; exit 1; }
fi
echo "${missing:- none}" >/tmp/apt.missing
# A machine that has the package installed gives the node its copy: the
# check starts, as a new node does, without it.
if dpkg-query -W -f '${Status}' startgate 2>/dev/null | grep -q 'ok installed'; then
	dpkg --purge startgate >/tmp/purge.log 2>&1 || { cat /tmp/purge.log; exit 1; }
fi
mkdir -p /etc/containerd /etc/cni/net.d
cat >/etc/containerd/config.toml <<'T'
version = 2
[plugins."io.containerd.grpc.v1.cri"]
  restrict_oom_score_adj = true
  sandbox_image = "startgate.test/pause:1"
# The root's disk is overlayfs: the overlayfs snapshotter cannot mount there.
[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "native"
T
# NetworkReady for the CRI; hostNetwork pods need no CNI binary.
echo '{"cniVersion":"1.0.0","name":"startgate-test","plugins":[{"type":"loopback"}]}' >/etc/cni/net.d/10-startgate-test.conflist
systemctl enable containerd.service >/dev/null 2>&1
systemctl restart containerd.service
# mkimg NAME: a docker-archive image of busybox with a shell entrypoint that
# sleeps and exits 0 on SIGTERM.
mkimg() {
	local d; d=$(mktemp -d)
	mkdir -p "$d/rootfs/bin"
	cp /bin/busybox "$d/rootfs/bin/"
	for c in sh sleep; do ln -s busybox "$d/rootfs/bin/$c"; done
	tar -C "$d/rootfs" -cf "$d/layer.tar" .
	printf '{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/bin/sh","-c","trap \\"exit 0\\" TERM; sleep 2147483647 & wait"],"Env":["PATH=/bin"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
		"$(sha256sum "$d/layer.tar" | cut -d' ' -f1)" >"$d/config.json"
	printf '[{"Config":"config.json","RepoTags":["%s"],"Layers":["layer.tar"]}]' "$1" >"$d/manifest.json"
	tar -C "$d" -cf "$d.tar" config.json manifest.json layer.tar
	ctr -n k8s.io images import --snapshotter native "$d.tar" >/dev/null
	rm -rf "$d" "$d.tar"
}
mkimg startgate.test/pause:1
mkimg startgate.test/busybox:1
EOF
inside bash -s <"$tmp/setup.sh" || fail "installing and configuring containerd in the root"
waitfor 30 inside ctr -n k8s.io images check || fail "containerd does not answer"
say "containerd $(inside dpkg-query -W -f '${Version}' containerd) and runc from Debian (installed with apt in the node:$(inside cat /tmp/apt.missing)), CRI on the native snapshotter, local pause and busybox images ($((SECONDS - start)) s)"

put "$deb" /tmp/startgate.deb
inside dpkg -i /tmp/startgate.deb >"$tmp/dpkg.log" 2>&1 || { cat "$tmp/dpkg.log" >&2; fail "dpkg -i $(basename "$deb")"; }
units=$(for u in startgated.socket startgated-cri.socket startgated.service; do printf '%s %s, ' "$u" "$(inside systemctl is-enabled "$u" 2>/dev/null || true)"; done)
say "installed $(basename "$deb"): ${units%, } (node enable enables what kubelet needs)"

# kubeadm's layout, from the fixture, adjusted for a standalone kubelet on
# this machine (test-only copies; the fixture stays as kubeadm writes it):
# no kubeconfig, this machine's IP, the local pause image, and a
# KubeletConfiguration that runs here. containerRuntimeEndpoint is the
# fixture's line as kubeadm writes it, comment included.
sed 's|^Environment="KUBELET_KUBECONFIG_ARGS=.*|# reboot-check: a standalone kubelet (no API server): no kubeconfig\nEnvironment="KUBELET_KUBECONFIG_ARGS="|' \
	"$fixture/usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf" >"$tmp/10-kubeadm.conf"
nodeip=$(inside hostname -I | awk '{print $1}')
[ -n "$nodeip" ] || fail "the root has no IPv4 address for kubelet's --node-ip"
sed -e "s|--node-ip=[^ \"]*|--node-ip=$nodeip|" -e 's|--pod-infra-container-image=[^ "]*|--pod-infra-container-image=startgate.test/pause:1|' \
	"$fixture/var/lib/kubelet/kubeadm-flags.env" >"$tmp/kubeadm-flags.env"
cat >"$tmp/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
# kubeadm's config.yaml adjusted by hack/reboot-check.sh for a standalone
# kubelet in a booted root (cgroup v1, no API server).
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
makeIPTablesUtilChains: false
evictionHard:
  memory.available: 100Mi
  nodefs.available: "1%"
  nodefs.inodesFree: "1%"
  imagefs.available: "1%"
  imagefs.inodesFree: "1%"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
clusterDNS:
- 10.96.0.10
clusterDomain: cluster.local
$(grep '^containerRuntimeEndpoint:' "$fixture/var/lib/kubelet/config.yaml")
address: 127.0.0.1
port: $kport
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $healthz
kind: KubeletConfiguration
rotateCertificates: false
staticPodPath: /etc/kubernetes/manifests
fileCheckFrequency: 5s
EOF
inside mkdir -p /usr/lib/systemd/system/kubelet.service.d /var/lib/kubelet /etc/kubernetes/manifests /etc/default
put "$kube_bin/kubelet" /usr/bin/kubelet
put "$fixture/lib/systemd/system/kubelet.service" /lib/systemd/system/kubelet.service
put "$tmp/10-kubeadm.conf" /usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf
put "$tmp/kubeadm-flags.env" /var/lib/kubelet/kubeadm-flags.env
put "$fixture/etc/default/kubelet" /etc/default/kubelet
put "$tmp/config.yaml" /var/lib/kubelet/config.yaml
# kubeadm's kubelet package enables kubelet.service; so does this node.
inside systemctl daemon-reload
inside systemctl enable --now kubelet.service >/dev/null 2>&1 || fail "systemctl enable --now kubelet"

kubeletHealthy() { [ "$(inside curl -fsS "http://127.0.0.1:$healthz/healthz" 2>/dev/null)" = ok ]; }
waitfor 60 kubeletHealthy || fail "kubelet's /healthz on 127.0.0.1:$healthz did not answer ok"
say "kubelet $(inside kubelet --version | cut -d' ' -f2) runs kubeadm's layout standalone (healthz 127.0.0.1:$healthz), runtime $(inside startgatectl node status | awk '/^runtime endpoint:/ {print $3}')"

sums() { inside sha256sum $kubelet_files; }
sums >"$tmp/before.sha256"

# --- pods -------------------------------------------------------------------

# addPod NAME [CLASS]: a hostNetwork static pod sleeping in busybox, with
# startgate's class annotation when CLASS is given (a static pod bypasses
# the gate unless annotated). Written to a dotfile and moved into place:
# kubelet must not read it half written.
addPod() {
	local ann=""
	[ -n "${2:-}" ] && ann=$'  annotations:\n    startgate.io/class: '"$2"
	cat >"$tmp/$1.yaml" <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: $1
  namespace: default
$ann
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 5
  containers:
  - name: sleep
    image: startgate.test/busybox:1
    imagePullPolicy: Never
EOF
	put "$tmp/$1.yaml" "/etc/kubernetes/manifests/.$1.yaml"
	inside mv "/etc/kubernetes/manifests/.$1.yaml" "/etc/kubernetes/manifests/$1.yaml"
}
delPod() { inside rm -f "/etc/kubernetes/manifests/$1.yaml"; }

# running POD: the ids of the pod's running container (containerd's view,
# not through startgated).
running() {
	local c
	for c in $(inside ctr -n k8s.io containers ls -q "labels.\"io.kubernetes.pod.name\"==$1-$node,labels.\"io.kubernetes.container.name\"==sleep"); do
		inside ctr -n k8s.io tasks ls | awk -v c="$c" '$1 == c && $3 == "RUNNING" {print c}'
	done
}
isRunning() { [ -n "$(running "$1")" ]; }
isGone() { [ -z "$(running "$1")" ]; }

# counter NAME: startgated's counter (admitted, bypassed) since it started.
counter() { inside startgatectl -o json status | jq -r ".counters.$1"; }

# probe NAME: a new pod, annotated to go through the gate (not bypass it),
# must run and be admitted by startgated; then it is removed.
probe() {
	local before
	before=$(counter admitted) || fail "$1: startgatectl status"
	addPod "$1" normal
	waitfor 90 isRunning "$1" || fail "$1: new pod's container not running within 90 s"
	[ "$(counter admitted)" -gt "$before" ] || fail "$1: running, but startgated's admitted counter stayed at $before"
	delPod "$1"
	waitfor 60 isGone "$1" || fail "$1: still running 60 s after its manifest was removed"
}

addPod sleeper
waitfor 90 isRunning sleeper || fail "pod sleeper not running on containerd within 90 s"
sleeper=$(running sleeper)
say "pod sleeper runs on containerd (container ${sleeper:0:12})"

# --- 2. node enable on the real node ----------------------------------------
kstart() { inside systemctl show -p ExecMainStartTimestampMonotonic --value kubelet.service; }
k0=$(kstart)
out=$(inside startgatectl node enable --restart-kubelet 2>&1) || { echo "$out" >&2; fail "startgatectl node enable --restart-kubelet"; }
grep -q "healthz answers ok" <<<"$out" || fail "node enable did not wait for kubelet's healthz:\n$out"
grep -q "readiness is not checked" <<<"$out" || fail "node enable did not say the Node check is skipped without an API server:\n$out"
[ "$(inside startgatectl node status | awk '/^runtime endpoint:/ {print $3}')" = unix:///run/startgate/cri.sock ] || fail "kubelet's endpoint is not startgated's after enable"
# systemd's view: startgatectl's own (node status, "before the last
# switch") compares with /proc's start time, which has whole seconds only.
[ "$(kstart)" != "$k0" ] || fail "kubelet was not restarted by --restart-kubelet"
waitfor 30 kubeletHealthy || fail "kubelet unhealthy after enable"
[ "$(running sleeper)" = "$sleeper" ] || fail "the running pod was restarted by the switch (container $(running sleeper), was $sleeper)"
probe after-enable
addPod gated normal
waitfor 90 isRunning gated || fail "pod gated not running after enable"
say "node enable --restart-kubelet: kubelet on /run/startgate/cri.sock, healthz waited for, the Node check skipped (no API server, said so); sleeper kept running, new pods admitted by startgated ($(counter admitted) admitted, $(counter bypassed) bypassing)"

# --- 3. reboot ----------------------------------------------------------------
# Markers: one on the disk must stay, one in /run must go.
inside sh -c 'echo $$ >/run/reboot-check.marker; echo $$ >/var/lib/reboot-check.marker'
since=$(date +%s)
t=$SECONDS
"$boot" reboot "$name" >/dev/null || fail "$boot reboot $name"
inside test -e /run/reboot-check.marker && fail "/run survived the reboot: not a reboot"
inside test -e /var/lib/reboot-check.marker || fail "the disk did not survive the reboot"
say "rebooted in $((SECONDS - t)) s (power off inside, boot again on the same disk: /run empty, the disk kept)"

# From here only reads until startgated is seen active: a call to its API
# socket would start it by socket activation and hide a node that does not
# bring it up by itself.
active() { for u in "$@"; do [ "$(inside systemctl is-active "$u")" = active ] || return 1; done; }
criListens() { grep -qF /run/startgate/cri.sock <<<"$(inside ss -Hxl)"; }
waitfor 120 active containerd.service startgated-cri.socket startgated.service kubelet.service ||
	fail "after the reboot: containerd $(inside systemctl is-active containerd), startgated-cri.socket $(inside systemctl is-active startgated-cri.socket), startgated $(inside systemctl is-active startgated), kubelet $(inside systemctl is-active kubelet)"
criListens || fail "nothing listens on /run/startgate/cri.sock after the reboot"
waitfor 60 kubeletHealthy || fail "kubelet's healthz after the reboot"
waitfor 120 isRunning sleeper || fail "pod sleeper not running again within 120 s of the reboot"
waitfor 60 isRunning gated || fail "pod gated not running again after the reboot"
[ "$(counter admitted)" -ge 2 ] || fail "after the reboot startgated admitted $(counter admitted) starts; want both pods' sandboxes (2)"
[ "$(counter bypassed)" -ge 1 ] && [ "$(($(counter admitted) - $(counter bypassed)))" -ge 1 ] ||
	fail "after the reboot: admitted $(counter admitted), bypassed $(counter bypassed); want the static pod bypassing and the annotated one gated"
say "after the reboot, with no other command: containerd, startgated-cri.socket, startgated and kubelet active, cri.sock listening; both pods started again through the new startgated (admitted $(counter admitted), bypassed $(counter bypassed))"

# Ordering, as declared and as it happened at this boot.
after=$(inside systemctl show -p After --value kubelet.service)
wants=$(inside systemctl show -p Wants --value kubelet.service)
for u in startgated.service startgated-cri.socket; do
	grep -qw "$u" <<<"$after" || fail "kubelet.service is not After=$u: $after"
	grep -qw "$u" <<<"$wants" || fail "kubelet.service does not Want $u: $wants"
done
inside test -f "$dropin" || fail "$dropin missing"
grep -qw containerd.service <<<"$(inside systemctl show -p After --value startgated.service)" || fail "startgated.service is not After=containerd.service"
mono() { inside systemctl show -p "$2" --value "$1"; }
[ "$(mono containerd.service ActiveEnterTimestampMonotonic)" -le "$(mono startgated.service InactiveExitTimestampMonotonic)" ] ||
	fail "at boot startgated started before containerd was up"
[ "$(mono startgated.service ActiveEnterTimestampMonotonic)" -le "$(mono kubelet.service InactiveExitTimestampMonotonic)" ] ||
	fail "at boot kubelet started before startgated was ready"
verify=$(inside systemd-analyze verify kubelet.service startgated.service startgated-cri.socket startgated.socket containerd.service 2>&1 || true)
grep -qi "cycle" <<<"$verify" && fail "systemd-analyze verify found an ordering cycle:\n$verify"
chain=$(inside systemd-analyze critical-chain kubelet.service 2>&1) || fail "systemd-analyze critical-chain kubelet.service:\n$chain"
j=$(inside journalctl --since "@$since" --no-pager -o cat)
grep -qiE "ordering cycle|to break ordering" <<<"$j" && fail "the journal of the boot has an ordering cycle:\n$(grep -iE -A3 'ordering cycle' <<<"$j")"
onchain=no
grep -q startgated.service <<<"$chain" && onchain=yes
say "ordering: kubelet Wants/After startgated.service and startgated-cri.socket ($dropin), startgated After containerd; at this boot containerd up < startgated start, startgated ready < kubelet start; no ordering cycle (systemd-analyze verify, the boot's journal); startgated on kubelet's critical chain: $onchain"

# --- 4. restarts in any order while the pods run ------------------------------
# After each: the units active, kubelet healthy, the pods running (the same
# container or a new one), and a new pod admitted through startgated.
i=0
for seq in "restart containerd" "restart startgated" "restart kubelet" \
	"restart containerd startgated kubelet" \
	"restart kubelet;restart startgated;restart containerd" \
	"restart startgated;restart containerd" \
	"stop startgated.service;restart containerd"; do
	i=$((i + 1))
	before=$(running sleeper)
	IFS=';' read -ra cmds <<<"$seq"
	for c in "${cmds[@]}"; do
		# shellcheck disable=SC2086 # the words are systemctl's arguments
		# (stopping startgated.service warns that its sockets can start it
		# again: that is the point)
		inside systemctl $c 2>"$tmp/systemctl.err" || { cat "$tmp/systemctl.err" >&2; fail "systemctl $c"; }
	done
	# The stop: kubelet's next call on the socket systemd holds starts
	# startgated again; nothing else may.
	waitfor 90 active containerd.service startgated.service kubelet.service ||
		fail "[$seq] not back: containerd $(inside systemctl is-active containerd), startgated $(inside systemctl is-active startgated), kubelet $(inside systemctl is-active kubelet)"
	waitfor 60 kubeletHealthy || fail "[$seq] kubelet's healthz"
	waitfor 90 isRunning sleeper || fail "[$seq] pod sleeper not running within 90 s"
	waitfor 60 isRunning gated || fail "[$seq] pod gated not running"
	now=$(running sleeper)
	kept="kept running"
	[ "$now" = "$before" ] || kept="brought back (${now:0:12})"
	probe "probe$i"
	say "systemctl ${seq//;/, then }: sleeper $kept, a new pod admitted through startgated"
done
# An idle kubelet's calls (its relist, every second) started startgated
# again after the stop above: it was the socket, not an operator.

# An upgrade's maintainer scripts while kubelet is switched and pods run:
# the same package installed again runs prerm upgrade and postinst
# configure OLD, as a newer version does. kubelet must stay switched.
pid0=$(inside systemctl show -p MainPID --value startgated.service)
put "$deb" /tmp/startgate.deb # (the reboot emptied /tmp)
inside dpkg -i /tmp/startgate.deb >"$tmp/dpkg.log" 2>&1 || { cat "$tmp/dpkg.log" >&2; fail "dpkg -i over the installed package"; }
waitfor 90 active containerd.service startgated-cri.socket startgated.service kubelet.service || fail "units not active after the upgrade"
[ "$(inside startgatectl node status | awk '/^runtime endpoint:/ {print $3}')" = unix:///run/startgate/cri.sock ] && inside test -f "$dropin" ||
	fail "kubelet no longer switched after the upgrade"
waitfor 60 isRunning sleeper || fail "pod sleeper not running after the upgrade"
probe upgraded
say "dpkg -i over itself (prerm upgrade, postinst configure): kubelet still switched, startgated pid $pid0 -> $(inside systemctl show -p MainPID --value startgated.service), sleeper running, a new pod admitted through startgated"

# --- 5. disable: every file back, kubelet on containerd -----------------------
same() {
	sums >"$tmp/now.sha256"
	diff "$tmp/before.sha256" "$tmp/now.sha256" >&2 || return 1
	! inside test -e "$dropin"
}
onContainerd() {
	# With startgated and its sockets stopped, a new pod can only start if
	# kubelet talks to containerd.
	inside systemctl stop startgated.service startgated-cri.socket startgated.socket
	addPod "$1"
	waitfor 90 isRunning "$1" || fail "$1: a new pod did not start with startgated stopped: kubelet is not on containerd"
	delPod "$1"
	waitfor 60 isGone "$1" || fail "$1: still running after its manifest was removed"
}
out=$(inside startgatectl node disable --restart-kubelet 2>&1) || { echo "$out" >&2; fail "startgatectl node disable --restart-kubelet"; }
same || fail "kubelet's files differ from before enable after node disable"
[ "$(inside startgatectl node status | awk '/^runtime endpoint:/ {print $3}')" = unix:///var/run/containerd/containerd.sock ] || fail "kubelet's endpoint is not containerd's after disable"
onContainerd on-containerd
isRunning sleeper || fail "pod sleeper stopped by disable"
say "node disable --restart-kubelet: $(wc -l <"$tmp/before.sha256") kubelet files byte for byte as before (sha256), $dropin removed; with startgated stopped a new pod starts on containerd; sleeper kept running"

# --- 6. failures half way, on the real node -----------------------------------
status() { inside startgatectl node status; }
# A full disk under startgatectl's journal: enable cannot back up, and must
# change nothing.
inside mkdir -p /var/lib/startgate/kubelet
inside mount -t tmpfs -o size=64k tmpfs /var/lib/startgate/kubelet
inside sh -c 'dd if=/dev/zero of=/var/lib/startgate/kubelet/fill bs=4k 2>/dev/null; sync' || true
kpid=$(inside systemctl show -p MainPID --value kubelet.service)
if out=$(inside startgatectl node enable --restart-kubelet 2>&1); then fail "node enable on a full disk succeeded:\n$out"; fi
grep -q "nothing was changed" <<<"$out" || fail "node enable on a full disk does not say nothing was changed:\n$out"
same || fail "files changed by an enable that failed on a full disk"
[ "$(inside systemctl show -p MainPID --value kubelet.service)" = "$kpid" ] || fail "kubelet restarted by an enable that failed"
inside rm /var/lib/startgate/kubelet/fill
inside startgatectl node disable --if-enabled >/dev/null || fail "node disable --if-enabled after the failed enable"
grep -q "interrupted" <<<"$(status)" && fail "an interrupted switch left after a failed backup:\n$(status)"
inside umount /var/lib/startgate/kubelet
say "failure: disk full under /var/lib/startgate/kubelet: enable refused (\"$(grep -o 'backing up.*' <<<"$out" | head -n 1)\"), files byte for byte, kubelet not restarted"

# The drop-in's directory cannot be written: enable fails after the config
# was switched; the next disable undoes it.
inside mkdir -p "$(dirname "$dropin")"
inside chattr +i "$(dirname "$dropin")"
if out=$(inside startgatectl node enable --restart-kubelet 2>&1); then
	inside chattr -i "$(dirname "$dropin")"
	fail "node enable succeeded with $(dirname "$dropin") immutable:\n$out"
fi
inside chattr -i "$(dirname "$dropin")"
grep -q "interrupted enable" <<<"$(status)" || fail "no interrupted enable recorded:\n$(status)"
[ "$(inside sha256sum /var/lib/kubelet/config.yaml | cut -d' ' -f1)" != "$(awk '$2 == "/var/lib/kubelet/config.yaml" {print $1}' "$tmp/before.sha256")" ] ||
	fail "config.yaml unchanged: the failure was not half way"
[ "$(inside systemctl show -p MainPID --value kubelet.service)" = "$kpid" ] || fail "kubelet restarted by an enable that failed"
out2=$(inside startgatectl node disable --restart-kubelet 2>&1) || { echo "$out2" >&2; fail "node disable after the interrupted enable"; }
same || fail "files not as before after disable undid an interrupted enable"
say "failure: $(dirname "$dropin") immutable: enable stopped after switching config.yaml (\"$(grep -o 'node disable (or enable) undoes[^;]*' <<<"$out" | head -n 1)\"); the next disable undid it, files byte for byte"

# A config that cannot be restored: disable stops half way (the drop-in
# already removed); the next disable finishes.
out=$(inside startgatectl node enable --restart-kubelet 2>&1) || { echo "$out" >&2; fail "node enable after the failures"; }
waitfor 60 isRunning sleeper || fail "pod sleeper after enabling again"
probe re-enabled
inside chattr +i /var/lib/kubelet/config.yaml
if out=$(inside startgatectl node disable --restart-kubelet 2>&1); then
	inside chattr -i /var/lib/kubelet/config.yaml
	fail "node disable succeeded with config.yaml immutable:\n$out"
fi
inside chattr -i /var/lib/kubelet/config.yaml
grep -q "interrupted disable" <<<"$(status)" || fail "no interrupted disable recorded:\n$(status)"
inside test -e "$dropin" && fail "the drop-in still there: the failure was not half way"
out=$(inside startgatectl node disable --restart-kubelet 2>&1) || { echo "$out" >&2; fail "node disable after the interrupted disable"; }
same || fail "files not as before after the second disable"
onContainerd after-failures
say "failure: config.yaml immutable: disable stopped half way (drop-in removed, config not restored); the next disable finished, files byte for byte, kubelet on containerd"

# --- 7. the package goes with kubelet switched --------------------------------
out=$(inside startgatectl node enable --restart-kubelet 2>&1) || { echo "$out" >&2; fail "node enable before dpkg -r"; }
probe before-remove
inside dpkg -r startgate >"$tmp/dpkg.log" 2>&1 || { cat "$tmp/dpkg.log" >&2; fail "dpkg -r startgate"; }
same || fail "kubelet's files not as before after dpkg -r (prerm's node disable)"
waitfor 60 kubeletHealthy || fail "kubelet's healthz after dpkg -r"
addPod after-remove
waitfor 90 isRunning after-remove || fail "a new pod did not start after dpkg -r: kubelet is not on containerd"
isRunning sleeper || fail "pod sleeper not running after dpkg -r"
left=$(inside systemctl list-units --all --plain --no-legend 'startgated*' | awk '$3 != "inactive" || $4 != "dead" {print}')
[ -z "$left" ] || fail "startgate units still loaded or active after dpkg -r:\n$left"
inside dpkg --purge startgate >"$tmp/dpkg.log" 2>&1 || { cat "$tmp/dpkg.log" >&2; fail "dpkg --purge startgate"; }
for p in /etc/startgate /var/lib/startgate /usr/bin/startgated /usr/bin/startgatectl /run/startgate/cri.sock; do
	inside test -e "$p" && fail "$p left after dpkg --purge"
done
inside dpkg -s startgate >/dev/null 2>&1 && fail "dpkg still knows startgate after --purge"
same || fail "kubelet's files changed by dpkg --purge"
say "dpkg -r with kubelet switched: prerm put kubelet back (files byte for byte), new pods start on containerd; dpkg --purge left nothing"
say "ok ($((SECONDS - start)) s in the booted root)"
