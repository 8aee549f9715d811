#!/bin/sh
# Before removal (not before an upgrade): if kubelet was switched to
# startgated, switch it back to containerd first, so the node can still
# start containers once startgated is gone.
set -e
case "$1" in
upgrade|1) exit 0 ;; # deb upgrade / rpm upgrade: the new version takes over
esac
if [ -x /usr/bin/startgatectl ]; then
	if ! /usr/bin/startgatectl node disable --restart-kubelet --if-enabled; then
		echo "startgate: could not put kubelet back on containerd; see startgatectl node status" >&2
		exit 1
	fi
fi
if [ -d /run/systemd/system ]; then
	systemctl disable --now startgated.service startgated.socket startgated-cri.socket >/dev/null 2>&1 || true
fi
exit 0
