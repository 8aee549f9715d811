#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
fi
# purge (deb): the state node enable kept (backups of kubelet's files).
if [ "$1" = purge ]; then
	rm -rf /var/lib/startgate
fi
exit 0
