#!/usr/bin/env bash
# Installs the package (make package) in a new-machine Debian 12 root under
# a real systemd (PID 1), and checks what verify-units.sh cannot: the
# install enabling and starting the API socket, kubelet's CRI socket and
# the daemon; a reboot bringing all three back with no other command; an
# upgrade restarting the daemon on the new binary while the sockets stay
# open (calls made meanwhile are held, not refused); socket activation,
# READY and STATUS from the daemon, the unit's OOMScoreAdjust=-999 as
# systemd applies it, the journal keeping each line's level, the audit
# line of an operator's action, Restart= bringing the daemon back after
# kill -9 with a client's call held (not refused) while it is down, the
# watchdog restarting a hung (SIGSTOPped) daemon, `systemctl reload`
# applying an edited config and refusing a bad one, the sandbox letting
# prefetch read root's docker config.json; and remove and purge stopping
# and clearing it all.
#
# usage: BOOT=/path/to/fresh/boot hack/boot-check.sh
#   BOOT is a tool that boots such a root: "BOOT up NAME", "BOOT exec NAME
#   -- CMD", "BOOT cp NAME SRC DEST", "BOOT reboot NAME", "BOOT down NAME"
#   (on the project's machines, ../shared/fresh/boot). Needs root.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
boot=${BOOT:?BOOT must name the boot tool (e.g. ../shared/fresh/boot)}
name=sgcheck$$
tmp=$(mktemp -d)
trap '"$boot" down "$name" >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT

fail() { echo "boot-check: FAIL: $*" >&2; exit 1; }
inside() { "$boot" exec "$name" -- "$@"; }
show() { inside systemctl show startgated.service -p "$1" --value; }
units="startgated.socket startgated-cri.socket startgated.service"

# The package, as a node gets it (make package), and the one a commit
# later, to upgrade to.
build() {
	(cd "$1" && rm -rf dist && make package >"$tmp/make.log" 2>&1) || { tail -n 30 "$tmp/make.log"; fail "make package in $1"; }
	ls -t "$1"/dist/startgate_*.deb | head -n 1
}
deb=$(build "$repo")
git clone -q "$repo" "$tmp/later"
git -C "$tmp/later" -c user.name=boot-check -c user.email=boot-check@example.com commit -q --allow-empty -m "a later commit"
deb2=$(build "$tmp/later")
v2=$(sh "$repo/hack/version.sh" "$tmp/later")
printf 'version = 1\n[daemon]\nlog_level = "debug"\n' >"$tmp/config.toml"

# allUp WHEN: the three units active, both sockets listening, the daemon
# answering on the API socket.
allUp() {
	local u s
	for u in $units; do
		s=$(inside systemctl is-active "$u" || true)
		[ "$s" = active ] || fail "$u is $s $1; want active"
		[ "$(inside systemctl is-enabled "$u")" = enabled ] || fail "$u not enabled $1"
	done
	listening=$(inside ss -xlnH)
	for s in /run/startgate/startgate.sock /run/startgate/cri.sock; do
		grep -q " $s " <<<"$listening" || fail "nothing listens on $s $1: $listening"
	done
	inside startgatectl status >/dev/null || fail "startgatectl status $1"
}

"$boot" up "$name" >/dev/null
# In /root: a reboot empties /tmp.
"$boot" cp "$name" "$deb" /root/startgate.deb
"$boot" cp "$name" "$deb2" /root/startgate2.deb
# Installing enables and starts the three units: the daemon runs before
# any caller, as it will after every boot.
inside dpkg -i /root/startgate.deb >/dev/null
allUp "after the install"
echo "boot-check: installed: $units enabled and active; /run/startgate/startgate.sock and cri.sock listen"

# A reboot: /run is empty again, and only what is enabled starts.
"$boot" reboot "$name" >/dev/null
allUp "after a reboot"
echo "boot-check: rebooted: both sockets listen again and the daemon runs, with no other command"

# An upgrade: the daemon restarts on the new binary; the sockets are not
# restarted (the same invocation), so status calls made throughout are
# held in the backlog and answered, never refused.
pid=$(show MainPID)
apiInv=$(inside systemctl show startgated.socket -p InvocationID --value)
criInv=$(inside systemctl show startgated-cri.socket -p InvocationID --value)
inside sh -c 'rm -f /tmp/calls; while [ ! -e /tmp/stop ]; do startgatectl --timeout 30s status >/dev/null && echo ok >>/tmp/calls || echo failed >>/tmp/calls; done' &
caller=$!
sleep 1
inside dpkg -i /root/startgate2.deb >/dev/null
sleep 1
inside touch /tmp/stop
wait "$caller" || true
calls=$(inside cat /tmp/calls)
[ "$(grep -c ok <<<"$calls")" -gt 0 ] || fail "no status call got through during the upgrade"
! grep -q failed <<<"$calls" || fail "$(grep -c failed <<<"$calls") status calls failed during the upgrade (of $(wc -l <<<"$calls"))"
[ "$(inside dpkg-query -W -f='${Version}' startgate)" = "$v2" ] || fail "not upgraded to $v2"
new=$(show MainPID)
[ "$new" != "$pid" ] && [ "$new" != 0 ] || fail "the upgrade did not restart the daemon (MainPID $pid -> $new)"
out=$(inside startgatectl version)
grep -q "^daemon: $v2 " <<<"$out" || fail "the daemon is not $v2 after the upgrade: $(inside startgatectl version)"
[ "$(inside systemctl show startgated.socket -p InvocationID --value)" = "$apiInv" ] || fail "the upgrade restarted startgated.socket"
[ "$(inside systemctl show startgated-cri.socket -p InvocationID --value)" = "$criInv" ] || fail "the upgrade restarted startgated-cri.socket"
allUp "after the upgrade"
echo "boot-check: upgraded to $v2: the daemon restarted (pid $pid -> $new), the sockets kept open; $(wc -l <<<"$calls") status calls made throughout all answered"

# Socket activation: with the daemon stopped, the first connection
# starts it.
"$boot" cp "$name" "$tmp/config.toml" /etc/startgate/config.toml
# (systemctl warns that the sockets stay active: they are meant to.)
inside systemctl stop startgated.service 2>/dev/null
[ "$(show ActiveState)" = inactive ] || fail "startgated.service is $(show ActiveState) after systemctl stop; want inactive"
# The first connection starts it.
inside startgatectl status >/dev/null || fail "startgatectl status through the activated socket"
[ "$(show ActiveState)" = active ] || fail "startgated.service is $(show ActiveState) after a connection; want active"
[ "$(show OOMScoreAdjust)" = -999 ] || fail "OOMScoreAdjust is $(show OOMScoreAdjust), want -999"
status=$(show StatusText)
case $status in *in-flight*) ;; *) fail "STATUS is \"$status\", want the daemon's in-flight line" ;; esac
pid=$(show MainPID)
adj=$(inside cat "/proc/$pid/oom_score_adj")
echo "boot-check: active by socket activation, pid $pid; OOMScoreAdjust=$(show OOMScoreAdjust) (the kernel holds $adj: some VMs refuse to lower it); STATUS: $status"

# The journal keeps each line's level (the daemon's "<N>" prefixes): the
# debug lines of the calls above are priority 7, not the stream's 6.
inside startgatectl pause >/dev/null && inside startgatectl resume >/dev/null
sleep 1
j6=$(inside journalctl -u startgated.service -p 6 -o cat)
j7=$(inside journalctl -u startgated.service -p 7 -o cat)
case $j7 in *'"msg":"rpc"'*) ;; *) fail "no debug rpc line in the journal at priority 7:\n$j7" ;; esac
case $j6 in *'"msg":"rpc"'*) fail "debug rpc lines at priority 6 or above: the level prefixes were not taken" ;; esac
case $j6 in *'"msg":"operator action: pause"'*'"uid":0'*) ;; *) fail "no audit line for the pause with uid 0 at info:\n$j6" ;; esac
echo "boot-check: journal levels kept (debug at 7, info at 6); the pause audited"

# waitNew waits until a startgated other than pid $1 is active, up to $2
# seconds, and prints its pid.
waitNew() {
	local new
	for _ in $(seq $(($2 * 10))); do
		new=$(show MainPID)
		if [ "$new" != 0 ] && [ "$new" != "$1" ] && [ "$(show ActiveState)" = active ]; then
			echo "$new"
			return
		fi
		sleep 0.1
	done
	fail "no new startgated within $2 s of pid $1 (MainPID $new, $(show ActiveState))"
}

# kill -9: Restart=always brings it back (RestartSec=1s), and a client that
# calls at once, while no daemon runs, is held in the socket's backlog and
# answered by the new daemon, not refused.
held=$(inside sh -c "kill -9 $pid; s=\$(date +%s%N); startgatectl --timeout 30s status >/dev/null || exit 1; echo \$(( (\$(date +%s%N) - s) / 1000000 ))") ||
	fail "startgatectl status called right after kill -9 failed: the socket refused it"
new=$(waitNew "$pid" 10)
echo "boot-check: after kill -9 of $pid, back as pid $new (NRestarts $(show NRestarts)); a status call made at the kill was held ${held} ms and answered"

# The watchdog: a daemon that stops pinging (SIGSTOP) past WatchdogSec is
# aborted and restarted. WatchdogSec is shortened to 4 s by a drop-in so
# the check does not wait 30.
inside mkdir -p /etc/systemd/system/startgated.service.d
printf '[Service]\nWatchdogSec=4s\n' >"$tmp/watchdog.conf"
"$boot" cp "$name" "$tmp/watchdog.conf" /etc/systemd/system/startgated.service.d/watchdog.conf
inside systemctl daemon-reload
inside systemctl restart startgated.service
pid=$(show MainPID)
restarts=$(show NRestarts)
inside kill -STOP "$pid"
new=$(waitNew "$pid" 40)
[ "$(show NRestarts)" -gt "$restarts" ] || fail "NRestarts did not grow after the watchdog ($(show NRestarts))"
# Captured first: grep -q closing the pipe early would fail it (pipefail).
j=$(inside journalctl -u startgated.service -o cat)
grep -q "Watchdog timeout" <<<"$j" || fail "no watchdog timeout in the journal"
echo "boot-check: SIGSTOP of $pid: watchdog timeout, back as pid $new (NRestarts $(show NRestarts))"
inside rm /etc/systemd/system/startgated.service.d/watchdog.conf
inside systemctl daemon-reload
inside systemctl restart startgated.service

# systemctl reload: an edited config applies without a restart; a bad one
# fails the reload, names the key and changes nothing.
pid=$(show MainPID)
printf 'version = 1\n[daemon]\nlog_level = "debug"\n[admission.limits]\ninflight = 3\n' >"$tmp/config.toml"
"$boot" cp "$name" "$tmp/config.toml" /etc/startgate/config.toml
inside systemctl reload startgated.service || fail "systemctl reload with a valid config"
limitIs3() { grep -Eq '^in flight: +[0-9]+ / 3$' <<<"$(inside startgatectl status)"; }
for _ in $(seq 50); do limitIs3 && break; sleep 0.1; done
limitIs3 || fail "in-flight limit not 3 after the reload:\n$(inside startgatectl status)"
[ "$(show MainPID)" = "$pid" ] || fail "the reload restarted the daemon ($pid -> $(show MainPID))"
printf 'version = 1\n[admission.limits]\ninflight = -1\n' >"$tmp/config.toml"
"$boot" cp "$name" "$tmp/config.toml" /etc/startgate/config.toml
if inside systemctl reload startgated.service 2>/dev/null; then
	fail "systemctl reload with inflight = -1 succeeded"
fi
limitIs3 || fail "a failed reload changed the in-flight limit:\n$(inside startgatectl status)"
[ "$(show MainPID)" = "$pid" ] && [ "$(show ActiveState)" = active ] || fail "a failed reload stopped the daemon"
j=$(inside journalctl -u startgated.service -o cat)
grep -q "admission.limits.inflight" <<<"$j" || fail "the failed reload's error does not name admission.limits.inflight in the journal"
echo "boot-check: systemctl reload applied inflight = 3 in pid $pid; a bad file failed the reload, naming admission.limits.inflight, and changed nothing"
# Prefetch on, with root's docker config.json (where kubelet reads it too):
# the sandbox (ProtectHome=read-only) lets the daemon read it at start.
inside mkdir -p /root/.docker
printf '{"auths":{"registry.example.com":{"auth":"%s"}}}\n' "$(printf 'u:p' | base64)" >"$tmp/docker.json"
"$boot" cp "$name" "$tmp/docker.json" /root/.docker/config.json
printf 'version = 1\n[prefetch]\nenabled = true\ndocker_config = "/root/.docker/config.json"\n' >"$tmp/config.toml"
"$boot" cp "$name" "$tmp/config.toml" /etc/startgate/config.toml
inside systemctl restart startgated.service || fail "restart with prefetch on and /root/.docker/config.json"
j=$(inside journalctl -u startgated.service -o cat)
grep -q '"msg":"prefetch on".*"credentials_for":\["registry.example.com"\]' <<<"$j" ||
	fail "no \"prefetch on\" line with the credentials of /root/.docker/config.json:\n$(tail -n 5 <<<"$j")"
echo "boot-check: prefetch on with /root/.docker/config.json read inside the sandbox"

# Remove: the units stopped, the sockets gone; purge: nothing left.
inside dpkg -r startgate >/dev/null
for u in $units; do
	s=$(inside systemctl is-active "$u" || true)
	[ "$s" = inactive ] || fail "$u is $s after dpkg -r; want inactive"
done
for s in /run/startgate/startgate.sock /run/startgate/cri.sock; do
	! inside test -e "$s" || fail "$s left after dpkg -r"
done
inside dpkg --purge startgate >/dev/null
left=$(inside find /etc/systemd/system /etc/startgate /var/lib/startgate -name 'startgate*' 2>/dev/null || true)
[ -z "$left" ] || fail "purge left: $left"
failed=$(inside systemctl --failed --no-legend --plain)
! grep -q startgate <<<"$failed" || fail "failed units after the purge: $failed"
echo "boot-check: removed (units stopped, sockets gone) and purged (nothing left)"
echo "boot-check: ok"
