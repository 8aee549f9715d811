#!/usr/bin/env bash
# Installs the package (make package) in a new-machine Debian 12 root under
# a real systemd (PID 1), and checks what verify-units.sh cannot: socket
# activation, READY and STATUS from the daemon, the unit's
# OOMScoreAdjust=-999 as systemd applies it, the journal keeping each
# line's level, the audit line of an operator's action, Restart= bringing
# the daemon back after kill -9 with a client's call held (not refused)
# while it is down, the watchdog restarting a hung (SIGSTOPped) daemon,
# `systemctl reload` applying an edited config and refusing a bad one, and
# the sandbox letting prefetch read root's docker config.json.
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
echo "boot-check: ok"
