#!/usr/bin/env bash
# Boots this machine's own root filesystem as a throwaway node with a real
# systemd as PID 1: for checks that need systemd to start, order, restart
# and reboot units (hack/reboot-check.sh), on any machine that runs the
# project's CI, VM or chroot, without a prepared image.
#
#   hack/sysboot.sh up NAME             boot; prints NAME's PID 1 (as this
#                                       machine numbers it) once systemd has
#                                       finished booting
#   hack/sysboot.sh exec NAME -- CMD    run CMD in NAME's namespaces and root
#   hack/sysboot.sh cp NAME SRC DEST    copy SRC from here to DEST inside
#   hack/sysboot.sh reboot NAME         power off (systemd's own shutdown),
#                                       boot again: the disk layer stays,
#                                       /run and /tmp start empty
#   hack/sysboot.sh down NAME           kill everything it ran, unmount, drop
#                                       its disk layer
# Needs root. Exit status 3: this machine cannot boot a node (the reason on
# stderr: not root, no overlayfs, no cgroup namespaces, no systemd...).
#
# The node's disk is an overlayfs whose lower layer is "/" (what `make deps`
# installed is there: systemd, containerd, runc, busybox-static) and whose
# upper layer is a tmpfs: overlayfs cannot take an overlayfs upper, and the
# root of CI's chroot is one. Both are mounted in a mount namespace of the
# node's own, held across reboots by a keeper process (a namespace file
# entered with setns would put the caller at the namespace's root, outside
# a chroot such as CI's); nothing is mounted in the caller's namespace. PID 1
# runs in new PID, mount, cgroup, UTS and IPC namespaces, chrooted into the
# overlay, with a cgroup subtree of its own in every hierarchy (it manages
# that subtree and never the machine's), the machine's cgroup v1
# hierarchies mounted again under its /sys/fs/cgroup, a fresh /proc, /sys,
# /run and /tmp, and a /dev of its own holding only null, zero, full,
# random, urandom, tty and kmsg (kubelet reads it). It shares the machine's
# network and kernel: sysctls written inside are the machine's.
#
# A machine's root is not a new machine's, so before the first boot the
# upper layer gets (see prepare): a new machine-id and hostname; none of
# the machine's unit enablement, overrides or generators; masks for what
# would touch the machine's kernel, clock, devices, consoles or network;
# empty containerd, kubelet and CNI state.
set -euo pipefail

self=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
state=/run/startgate-sysboot

usage() { sed -n '6,18p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
die() { echo "sysboot: $*" >&2; exit 1; }
unable() { echo "sysboot: cannot boot a node on this machine: $*" >&2; exit 3; }

# Units that must not run in a copy of this machine that shares its kernel
# and network (masked in the node only). Units the machine enables are not
# here: the node starts with none enabled (prepare).
masks=(
	# devices: udev would replay the machine's uevents and rename, load
	# firmware, run rules against its disks
	systemd-udevd.service systemd-udevd-control.socket systemd-udevd-kernel.socket
	systemd-udev-trigger.service systemd-udev-settle.service systemd-hwdb-update.service
	systemd-rfkill.service systemd-rfkill.socket systemd-backlight@.service
	# the kernel: modules, sysctl.d, binfmt_misc, pstore (it deletes the
	# machine's crash records), the TPM's PCRs, partitions
	systemd-modules-load.service kmod-static-nodes.service systemd-sysctl.service
	systemd-binfmt.service proc-sys-fs-binfmt_misc.automount proc-sys-fs-binfmt_misc.mount
	systemd-pstore.service systemd-pcrphase.service systemd-pcrphase-sysinit.service
	systemd-pcrphase-initrd.service systemd-repart.service systemd-hibernate-resume@.service
	systemd-boot-update.service systemd-bless-boot.service
	# filesystems: the node's / is an overlay, the machine's fstab is not
	# its own
	systemd-remount-fs.service systemd-fsck-root.service systemd-fsck@.service
	systemd-growfs-root.service systemd-growfs@.service systemd-quotacheck.service quotaon.service
	# the clock
	systemd-timesyncd.service
	# consoles: the machine's serial console and VTs are not the node's
	getty@.service serial-getty@.service console-getty.service container-getty@.service
	getty-static.service
	# the network is the machine's: nothing inside may configure it
	systemd-networkd.service systemd-networkd.socket systemd-networkd-wait-online.service
	systemd-resolved.service networking.service ifup@.service ifupdown-pre.service
	NetworkManager.service NetworkManager-wait-online.service wpa_supplicant.service
	ssh.service ssh.socket
)

# Directories of the machine's runtime state a new node starts without.
fresh=(/etc/systemd/system /etc/systemd/system-generators /var/lib/containerd
	/var/lib/kubelet /etc/kubernetes /etc/cni/net.d /var/log/pods /var/log/containers)

# Files of the machine's root the node must not have, left by the container
# image this machine's root was made from: a container manager's marker
# (/.dockerenv) would make the node's systemd take itself for that
# manager's container (without one it finds the cgroup namespace and says
# container-other, here as in CI's root); Docker's policy-rc.d ("exit 101")
# forbids maintainer scripts to start or stop units, so dpkg -r would leave
# a package's sockets listening.
hide=(/.dockerenv /.containerenv /usr/sbin/policy-rc.d)

# checks: the kernel features and programs a boot needs, before touching
# anything.
checks() {
	[ "$(id -u)" = 0 ] || unable "needs root"
	local c
	for c in unshare nsenter mount umount chroot setsid mknod; do
		command -v "$c" >/dev/null || unable "no $c (util-linux, mount, coreutils)"
	done
	[ -x /lib/systemd/systemd ] || unable "systemd is not installed (/lib/systemd/systemd; make deps installs it)"
	[ -e /proc/self/ns/cgroup ] || unable "the kernel has no cgroup namespaces"
	[ -e /proc/self/ns/pid ] && [ -e /proc/self/ns/uts ] && [ -e /proc/self/ns/ipc ] || unable "the kernel lacks PID, UTS or IPC namespaces"
	grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || true
	grep -qw overlay /proc/filesystems || unable "the kernel has no overlayfs (modprobe overlay failed)"
	grep -qw tmpfs /proc/filesystems || unable "the kernel has no tmpfs"
	# systemd is given the machine's cgroup v1 hierarchies (the hybrid
	# layout of the project's machines); a unified-only machine would need
	# a cgroup2 delegation this tool does not do.
	[ -d /sys/fs/cgroup/systemd ] && [ -f /sys/fs/cgroup/systemd/cgroup.procs ] ||
		unable "no cgroup v1 name=systemd hierarchy at /sys/fs/cgroup/systemd (only the hybrid cgroup layout is supported)"
}

# hierarchies: the machine's cgroup v1 and v2 mount points.
hierarchies() {
	local h
	for h in /sys/fs/cgroup/*/; do
		h=${h%/}
		[ -L "$h" ] || [ ! -f "$h/cgroup.procs" ] || echo "$h"
	done
}

# pid1: NAME's PID 1 as this machine numbers it, checked to be one.
pid1() {
	local p
	p=$(cat "$dir/pid" 2>/dev/null) || { echo "sysboot: $name is not up" >&2; exit 2; }
	grep -qE '^NSpid:.*[[:space:]]1$' "/proc/$p/status" 2>/dev/null ||
		{ echo "sysboot: $name is not up (PID $p is gone)" >&2; exit 2; }
	echo "$p"
}

# keeper: the PID of the process holding NAME's disk in its mount
# namespace, checked to be the one up started.
keeper() {
	local k
	k=$(cat "$dir/keeper" 2>/dev/null) &&
		[ "$(readlink "/proc/$k/ns/mnt" 2>/dev/null)" = "$(cat "$dir/keeper.ns")" ] &&
		echo "$k"
}

# inholder CMD...: runs CMD in the keeper's mount namespace, at the root
# the caller has (its chroot, if it is in one).
inholder() {
	local k
	k=$(keeper) || die "the process holding $name's disk is gone; down it"
	nsenter -t "$k" -m -r -w -- "$@"
}

# upperdirs DIR: DIR and its parents in the upper layer, with the
# machine's owner and mode (an upper directory's hide the lower's).
upperdirs() {
	local part path=
	local -a parts
	IFS=/ read -ra parts <<<"${1#/}"
	for part in "${parts[@]}"; do
		path+=/$part
		[ -d "$u$path" ] && continue
		mkdir "$u$path"
		chown --reference="$path" "$u$path"
		chmod --reference="$path" "$u$path"
	done
}

# prepare: in the holder namespace, the tmpfs, the upper layer's changes
# that must exist before the overlay is mounted (whiteouts), the overlay,
# then the files written through it.
prepare() {
	local m=$dir/merged p d g
	u=$dir/disk/upper
	mount -t tmpfs -o mode=700 "sysboot-$name" "$dir/disk"
	mkdir "$u" "$dir/disk/work"
	# A whiteout (a 0/0 character device in the upper layer) hides the
	# machine's directory; creating it again through the overlay makes it
	# an empty (opaque) one. Parents keep the machine's owner and mode.
	for p in "${fresh[@]}"; do
		[ -e "$p" ] || continue
		upperdirs "$(dirname "$p")"
		mknod "$u$p" c 0 0
	done
	for p in "${hide[@]}"; do
		[ -e "$p" ] || continue
		upperdirs "$(dirname "$p")"
		mknod "$u$p" c 0 0
	done
	mount -t overlay overlay -o "lowerdir=/,upperdir=$u,workdir=$dir/disk/work" "$m" ||
		die "mounting the overlay (lowerdir=/, upper on tmpfs) failed"
	for p in "${fresh[@]}"; do
		[ -e "$p" ] || continue
		mkdir "$m$p"
		chown --reference="$p" "$m$p"
		chmod --reference="$p" "$m$p"
	done
	# No unit the machine enabled starts in the node (etcd, postgres,
	# prometheus, the machine's containerd...): /etc/systemd/system is
	# empty but for the target and the masks. A test enables what it needs.
	mkdir -p "$m/etc/systemd/system" "$m/etc/systemd/system-generators"
	ln -s /lib/systemd/system/multi-user.target "$m/etc/systemd/system/default.target"
	for p in "${masks[@]}"; do ln -s /dev/null "$m/etc/systemd/system/$p"; done
	# Generators turn the machine's fstab, crypttab, init scripts, rc.local,
	# serial console and other packages' settings (postgresql's clusters)
	# into units: none of them is the node's.
	for d in /lib/systemd/system-generators /usr/lib/systemd/system-generators /usr/local/lib/systemd/system-generators; do
		for g in "$d"/*; do
			[ -e "$g" ] && ln -sfn /dev/null "$m/etc/systemd/system-generators/$(basename "$g")"
		done
	done
	# Its own identity: the journal, D-Bus and kubelet key on these. A
	# machine-id also keeps systemd from a first boot, whose preset-all
	# would enable every installed unit.
	od -An -tx1 -N16 /dev/urandom | tr -d ' \n' >"$m/etc/machine-id"
	echo >>"$m/etc/machine-id"
	echo "$name" >"$m/etc/hostname"
	# As Debian's installer does, so that the node's own name resolves.
	printf '127.0.1.1\t%s\n' "$name" >>"$m/etc/hosts"
	[ -d /usr/local/go ] && mkdir -p "$m/usr/local/go"
	# The kernel command line of the machine (console=, systemd.*) is not
	# the node's; its /proc/cmdline is this file.
	echo "sysboot" >"$dir/cmdline"
}

# init: runs as PID 1 of the node's new namespaces, in a copy of the
# keeper's mount tree: records its PID as this machine numbers it, mounts the API
# filesystems of the node, becomes systemd.
init() {
	local m=$dir/merged me line ctrls d c
	# bash opens /proc/self itself: the /proc here is the machine's, so this
	# is our PID outside, whatever namespaces the caller is in.
	read -r me _ </proc/self/stat
	echo "$me" >"$dir/pid.new" && mv "$dir/pid.new" "$dir/pid"

	mount -t proc -o nosuid,nodev,noexec proc "$m/proc"
	mount --bind "$dir/cmdline" "$m/proc/cmdline"
	mount -t sysfs -o nosuid,nodev,noexec sysfs "$m/sys"
	mount -t tmpfs -o mode=755,nosuid,nodev,noexec tmpfs "$m/sys/fs/cgroup"
	# Each v1 hierarchy this process is in (the cgroup namespace makes its
	# subtree the root of every one), named as systemd names them.
	while IFS= read -r line; do
		ctrls=$(cut -d: -f2 <<<"$line")
		[ -n "$ctrls" ] || continue
		d=${ctrls#name=}
		mkdir -p "$m/sys/fs/cgroup/$d"
		mount -t cgroup -o "$ctrls" cgroup "$m/sys/fs/cgroup/$d"
		if [[ $d == *,* ]]; then
			for c in ${d//,/ }; do ln -s "$d" "$m/sys/fs/cgroup/$c"; done
		fi
	done </proc/self/cgroup
	if grep -q '^0::' /proc/self/cgroup; then
		mkdir -p "$m/sys/fs/cgroup/unified"
		mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$m/sys/fs/cgroup/unified"
	fi

	mount -t tmpfs -o mode=755,nosuid,size=4m "sysboot-dev" "$m/dev"
	for c in null zero full random urandom tty kmsg; do
		[ -e "/dev/$c" ] || continue
		touch "$m/dev/$c"
		mount --bind "/dev/$c" "$m/dev/$c"
	done
	# /dev/console is a plain file of the boot's, never the machine's
	# console: systemd finds no terminal there and logs to kmsg and the
	# journal; whatever a unit writes to the console stays in the file.
	touch "$m/dev/console"
	mount --bind "$dir/console" "$m/dev/console"
	mkdir "$m/dev/pts" "$m/dev/shm" "$m/dev/mqueue"
	mount -t devpts -o newinstance,ptmxmode=0666,mode=620,gid=5 devpts "$m/dev/pts"
	ln -s pts/ptmx "$m/dev/ptmx"
	mount -t tmpfs -o mode=1777,nosuid,nodev shm "$m/dev/shm"
	ln -s /proc/self/fd "$m/dev/fd"
	ln -s /proc/self/fd/0 "$m/dev/stdin"
	ln -s /proc/self/fd/1 "$m/dev/stdout"
	ln -s /proc/self/fd/2 "$m/dev/stderr"

	mount -t tmpfs -o mode=755,nosuid,nodev tmpfs "$m/run"
	mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$m/tmp"
	# Go is a separate mount on CI's machines, so not in the lower layer.
	[ -d /usr/local/go ] && mount --bind -o ro /usr/local/go "$m/usr/local/go"
	# systemd sees the cgroup namespace and runs as in a container, where it
	# would log to /dev/console until journald is up; kmsg, as on a
	# machine, brings those lines (the boot's first transaction, an ordering
	# cycle found in it) into the node's journal.
	exec env -i /usr/sbin/chroot "$m" /lib/systemd/systemd --system --log-target=journal-or-kmsg
}

# cgroups: NAME's subtree in every hierarchy: systemd gets it as the root
# of its cgroup namespace, and manages that subtree, never the machine's.
cgroups() {
	local h
	for h in $(hierarchies); do
		mkdir -p "$h/$cg"
		if [ -f "$h/cpuset.cpus" ]; then
			cat "$h/cpuset.cpus" >"$h/$cg/cpuset.cpus"
			cat "$h/cpuset.mems" >"$h/$cg/cpuset.mems"
		fi
	done
}

# joincgroups: moves this (sub)shell into NAME's subtree.
joincgroups() {
	local h
	for h in $(hierarchies); do echo "$BASHPID" >"$h/$cg/cgroup.procs"; done
}

# boot: starts systemd over the mounted disk and waits until it has booted.
boot() {
	local k p st launcher
	k=$(keeper) || die "the process holding $name's disk is gone; down it"
	rm -f "$dir/pid"
	: >"$dir/console"
	(
		joincgroups
		exec setsid nsenter -t "$k" -m -r -w -- \
			unshare --pid --fork --mount --cgroup --uts --ipc --propagation private -- "$self" _init "$name"
	) </dev/null >>"$dir/boot.log" 2>&1 &
	launcher=$!
	for _ in $(seq 600); do
		st=
		if p=$(cat "$dir/pid" 2>/dev/null); then
			st=$(nsenter -t "$p" -m -p -r -w /usr/bin/systemctl is-system-running 2>/dev/null || true)
		fi
		# unshare waits for PID 1: once it is gone, so is the boot.
		kill -0 "$launcher" 2>/dev/null || { st="PID 1 exited"; break; }
		case $st in
		running | degraded)
			[ "$st" = degraded ] && nsenter -t "$p" -m -p -r -w /usr/bin/systemctl --failed --no-pager >>"$dir/boot.log" 2>&1
			echo "$p"
			return 0
			;;
		esac
		sleep 0.2
	done
	{
		echo "sysboot: $name did not finish booting (${st:-no answer from systemd within 120 s})"
		[ -n "${p:-}" ] && nsenter -t "$p" -m -p -r -w /usr/bin/systemctl list-jobs --no-pager 2>&1
		tail -n 20 "$dir/boot.log" "$dir/console"
	} >&2
	return 1
}

# teardown: kills every process of NAME (PID 1, so its PID namespace, the
# keeper, and anything else in its cgroup subtree): its mounts go with the
# last process of their namespaces. Removes the subtree and $dir, then
# checks no process still has the disk mounted. Idempotent.
teardown() {
	local h p left
	if p=$(cat "$dir/pid" 2>/dev/null) && grep -qE '^NSpid:.*[[:space:]]1$' "/proc/$p/status" 2>/dev/null; then
		kill -9 "$p" 2>/dev/null || true
	fi
	p=$(keeper) && kill -9 "$p" 2>/dev/null
	# Whatever else is in the subtree (the unshare that started PID 1, a
	# PID 1 that never wrote its pid): a frozen task cannot die, so thaw.
	for _ in $(seq 50); do
		left=$(for h in $(hierarchies); do
			[ -d "$h/$cg" ] || continue
			[ -f "$h/$cg/freezer.state" ] && find "$h/$cg" -name freezer.state -exec sh -c 'echo THAWED >"$1"' _ {} \; 2>/dev/null
			find "$h/$cg" -name cgroup.procs -exec cat {} + 2>/dev/null
		done | sort -u | tr '\n' ' ')
		left=${left% }
		[ -z "$left" ] && break
		# shellcheck disable=SC2086 # one PID a word
		kill -9 $left 2>/dev/null || true
		sleep 0.2
	done
	[ -z "$left" ] || echo "sysboot: processes still in $cg after 10 s: $left" >&2
	for h in $(hierarchies); do
		[ -d "$h/$cg" ] && find "$h/$cg" -depth -type d -exec rmdir {} + 2>/dev/null
		[ -d "$h/$cg" ] && echo "sysboot: could not remove $h/$cg" >&2
	done
	rm -rf "$dir"
	# The disk went with the last process of its mount namespace (the
	# keeper, then PID 1's): no process may still see it.
	local holders
	holders=$(grep -lF " $dir/" /proc/[0-9]*/mountinfo 2>/dev/null || true)
	[ -z "$holders" ] || { echo "sysboot: $name's mounts still held by: $holders" >&2; return 1; }
	[ -z "$left" ]
}

verb=${1:-}
name=${2:-}
[ -n "$verb" ] && [ -n "$name" ] || usage
[[ $name =~ ^[a-zA-Z0-9][a-zA-Z0-9_-]{0,62}$ ]] || die "bad NAME $name: letters, digits, _ and -, at most 63"
dir=$state/$name
cg=startgate-sysboot-$name

case $verb in
up)
	checks
	[ -e "$dir" ] && { echo "sysboot: $name exists; down it first" >&2; exit 2; }
	mkdir -p "$dir/disk" "$dir/merged"
	trap 'teardown >/dev/null 2>&1 || true' EXIT
	cgroups
	# The keeper: in the boot's cgroup subtree (down kills it there), not
	# in the node's PID namespace (a reboot leaves it).
	(
		joincgroups
		cd /
		exec unshare --mount --propagation private -- sleep infinity
	) </dev/null >/dev/null 2>&1 &
	echo $! >"$dir/keeper"
	ns=
	for _ in $(seq 50); do
		ns=$(readlink "/proc/$!/ns/mnt" 2>/dev/null) && [ "$ns" != "$(readlink /proc/self/ns/mnt)" ] && break
		sleep 0.1
	done
	[ "$ns" != "$(readlink /proc/self/ns/mnt)" ] || die "the keeper of $name's mount namespace did not start"
	echo "$ns" >"$dir/keeper.ns"
	inholder "$self" _prepare "$name"
	boot
	trap - EXIT
	;;
_prepare) prepare ;;
_init) init ;;
exec)
	p=$(pid1)
	shift 2
	[ "${1:-}" = -- ] && shift
	[ $# -gt 0 ] || usage
	exec nsenter -t "$p" -m -u -i -p -r -w -- /usr/bin/env PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"
	;;
cp)
	[ $# = 4 ] || usage
	p=$(pid1)
	[[ $4 == /* ]] || die "DEST must be absolute: $4"
	cp -- "$3" "/proc/$p/root$4"
	;;
reboot)
	p=$(pid1)
	nsenter -t "$p" -m -p -r -w /usr/bin/systemctl poweroff >/dev/null 2>&1 || kill -s SIGRTMIN+4 "$p" 2>/dev/null || true
	for _ in $(seq 300); do
		[ -d "/proc/$p" ] || break
		sleep 0.2
	done
	if [ -d "/proc/$p" ]; then
		echo "sysboot: $name did not power off within 60 s; killing it" >&2
		kill -9 "$p"
		for _ in $(seq 50); do [ -d "/proc/$p" ] || break; sleep 0.2; done
	fi
	boot
	;;
down) teardown ;;
*) usage ;;
esac
