#!/bin/sh
# After install or upgrade. Never touches kubelet: startgatectl node enable
# does, when the operator asks.
set -e
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload
	# deb passes "configure" (with the old version on upgrade), rpm the
	# count of installed versions: 1 on install, 2 on upgrade.
	case "$1" in
	configure) old="$2" ;;
	1) old="" ;;
	*) old="upgrade" ;;
	esac
	if [ -z "$old" ]; then
		# Socket activation: the daemon starts on its first caller.
		systemctl enable --now startgated.socket >/dev/null 2>&1 || true
	else
		# An upgrade: the running daemon restarts on the new binary. Its
		# restart takes back the slots it held from containerd, and the
		# sockets (held by systemd) keep kubelet's calls waiting, not failing.
		systemctl try-restart startgated.service >/dev/null 2>&1 || true
	fi
fi
exit 0
