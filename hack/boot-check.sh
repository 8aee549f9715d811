#!/usr/bin/env bash
# Installs the package (make package) in a new-machine Debian 12 root under
# a real systemd (PID 1), and checks what verify-units.sh cannot: socket
# activation, READY and STATUS from the daemon, the unit's
# OOMScoreAdjust=-999 as systemd applies it, the journal keeping each
# line's level, the audit line of an operator's action, and Restart=
# bringing the daemon back after kill -9.
#
# usage: BOOT=/path/to/fresh/boot hack/boot-check.sh
#   BOOT is a tool that boots such a root: "BOOT up NAME", "BOOT exec NAME
#   -- CMD", "BOOT cp NAME SRC DEST", "BOOT down NAME" (on the project's
#   machines, ../shared/fresh/boot). Needs root.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
boot=${BOOT:?BOOT must name the boot tool (e.g. ../shared/fresh/boot)}
name=sgcheck$$
tmp=$(mktemp -d)
trap '"$boot" down "$name" >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT

fail() { echo "boot-check: FAIL: $*" >&2; exit 1; }
inside() { "$boot" exec "$name" -- "$@"; }
show() { inside systemctl show startgated.service -p "$1" --value; }

# The package, as a node gets it (make package).
(cd "$repo" && make package >/dev/null)
deb=$(ls -t "$repo"/dist/startgate_*.deb | head -n 1)
printf 'version = 1\n[daemon]\nlog_level = "debug"\n' >"$tmp/config.toml"

"$boot" up "$name" >/dev/null
"$boot" cp "$name" "$deb" /tmp/startgate.deb
# Installing enables startgated.socket (postinstall) and starts nothing
# else: the daemon starts on its first caller.
inside dpkg -i /tmp/startgate.deb >/dev/null
[ "$(inside systemctl is-active startgated.socket)" = active ] || fail "startgated.socket not active after the install"
[ "$(show ActiveState)" = inactive ] || fail "startgated.service is $(show ActiveState) before anyone connected; want inactive (socket activation)"
"$boot" cp "$name" "$tmp/config.toml" /etc/startgate/config.toml

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

# kill -9: Restart=always brings it back, and the socket stays open.
inside kill -9 "$pid"
for _ in $(seq 100); do
	new=$(show MainPID)
	[ "$new" != 0 ] && [ "$new" != "$pid" ] && [ "$(show ActiveState)" = active ] && break
	sleep 0.1
done
[ "$new" != 0 ] && [ "$new" != "$pid" ] || fail "no new startgated after kill -9 of $pid (MainPID $new, $(show ActiveState))"
inside startgatectl status >/dev/null || fail "startgatectl status after the restart"
echo "boot-check: after kill -9 of $pid, back as pid $new (NRestarts $(show NRestarts))"
echo "boot-check: ok"
