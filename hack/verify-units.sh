#!/usr/bin/env bash
# Verifies the systemd units in packaging/systemd with systemd-analyze.
#
# systemd-analyze verify checks that ExecStart's (and ExecReload's) binary
# exists, so the service is verified as a copy whose commands point at a
# freshly built startgated, with the socket unit beside it. PID 1 need not be systemd.
# Any line of output that mentions one of our units fails the check:
# systemd-analyze exits 0 on many warnings.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
units="$repo/packaging/systemd"

if ! command -v systemd-analyze >/dev/null; then
	echo "verify-units: systemd-analyze not found (apt-get install systemd)" >&2
	exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

(cd "$repo" && go build -o "$tmp/startgated" ./cmd/startgated)
sed -E "s#^(Exec(Start|Reload))=/usr/bin/startgated#\1=$tmp/startgated#" \
	"$units/startgated.service" >"$tmp/startgated.service"
cp "$units/startgated.socket" "$units/startgated-cri.socket" "$tmp/"
if ! grep -q "^ExecStart=$tmp/startgated " "$tmp/startgated.service"; then
	echo "verify-units: ExecStart=/usr/bin/startgated not found in startgated.service" >&2
	exit 1
fi

set +e
out=$(cd "$tmp" && SYSTEMD_LOG_COLOR=0 systemd-analyze verify \
	"$tmp/startgated.socket" "$tmp/startgated-cri.socket" "$tmp/startgated.service" 2>&1)
rc=$?
set -e
if [ -n "$out" ]; then
	echo "systemd-analyze verify said:"
	echo "$out" | sed 's/^/  /'
fi
if [ $rc -ne 0 ]; then
	echo "verify-units: systemd-analyze verify exited $rc" >&2
	exit 1
fi
if echo "$out" | grep -q 'startgated\(-cri\)\?\.\(service\|socket\)'; then
	echo "verify-units: warnings about our units" >&2
	exit 1
fi
echo "verify-units: startgated.service, startgated.socket and startgated-cri.socket ok"
