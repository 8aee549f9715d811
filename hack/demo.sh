#!/usr/bin/env bash
# The startgate demo (`make demo`), in two parts, about a minute in all.
#
#  1. The gate: startgated on a private socket in a temporary directory;
#     the gate paused and resumed with mixed classes; the in-flight limit
#     following CPU pressure; a clean stop.
#  2. The CRI: startgate-bench starts a private containerd (the testbed),
#     a loopback registry serving the app image, and startgated's CRI
#     proxy in front of the containerd; then it patches the app's tag (a
#     20 MB layer replaced; the registry behind a 100 Mbit/s cap, as a
#     remote one) before each burst of 20 pods that pull it and
#     start at once: straight to containerd, through startgated, and
#     through startgated with the patch prefetched. It prints the
#     side-by-side table and where the chart is. Needs root, containerd,
#     runc, busybox-static and docker-registry (`make deps`, which
#     `make demo` runs first).
#
# Needs no stdin and leaves nothing running, also on Ctrl-C or an error.
set -euo pipefail

cd "$(dirname "$0")/.."
BIN=$PWD/bin
command -v go >/dev/null || PATH=$PATH:/usr/local/go/bin
if ! command -v make >/dev/null; then
	echo "demo: make is missing (apt-get install make)" >&2
	exit 1
fi

say() { printf '\n==> %s\n' "$*"; }
ctl() { "$BIN/startgatectl" "$@"; }

TMP=""
daemon_pid=""
pgroups=() # background jobs, each the leader of its own process group
hogs=()

# bg runs a command in the background in its own session, so that one
# kill reaches it and its children, and Ctrl-C reaches only this script.
bg() {
	setsid "$@" </dev/null &
	pgroups+=("$!")
}

# stop_groups ends the given process groups and reaps them.
stop_groups() {
	local pg
	for pg in "$@"; do
		kill -TERM -- "-$pg" 2>/dev/null || kill -TERM "$pg" 2>/dev/null || true
	done
	for pg in "$@"; do
		wait "$pg" 2>/dev/null || true
	done
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	stop_groups "${pgroups[@]}"
	if [[ -n $daemon_pid ]] && kill -0 "$daemon_pid" 2>/dev/null; then
		kill -TERM "$daemon_pid" 2>/dev/null || true
		for _ in $(seq 50); do
			kill -0 "$daemon_pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$daemon_pid" 2>/dev/null || true
		wait "$daemon_pid" 2>/dev/null || true
	fi
	if [[ $rc -eq 130 || $rc -eq 143 ]]; then
		echo "demo: interrupted; everything it started is stopped" >&2
	elif [[ $rc -ne 0 && -n $TMP && -s $TMP/startgated.log ]]; then
		echo "demo: failed (exit $rc); the end of startgated's log:" >&2
		tail -n 20 "$TMP/startgated.log" >&2
	fi
	[[ -n $TMP ]] && rm -rf "$TMP"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# until_status waits up to 10 s for `status -o json` to contain $1.
until_status() {
	local out
	for _ in $(seq 100); do
		out=$(ctl status -o json 2>/dev/null) || out=""
		[[ $out == *"$1"* ]] && return 0
		sleep 0.1
	done
	echo "demo: timed out waiting for status to show $1" >&2
	return 1
}

# status_line prints the figures of `status` that move, on one line.
status_line() {
	local out
	out=$(ctl status)
	awk -v t="$(date +%T)" '
		/^in flight:/ { sub(/^in flight: +/, ""); gsub(/ /, ""); inflight = $0 }
		/^rate:/ { rate = $2 }
		/^queue:/ { queued = $2 }
		/^controller:/ { state = $2 }
		/^pressure:/ { cpu = $3; raw = $5; sub(/\),?$/, "", raw) }
		END { printf "  %s  in flight %-6s rate %-9s queued %-3s cpu pressure %s (raw %s)  %s\n",
			t, inflight, rate, queued, cpu, raw, state }' <<<"$out"
}

# status_every prints status_line every second for $1 seconds.
status_every() {
	for _ in $(seq "$1"); do
		status_line
		sleep 1
	done
}

SECONDS=0
say "make build, and startgate-bench"
make --no-print-directory build
go build -o "$BIN/startgate-bench" ./harness/cmd/startgate-bench

say "PART 1: the gate (startgated and startgatectl, no containers)"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/startgate-demo.XXXXXX")
export STARTGATE_SOCKET=$TMP/startgate.sock
cat >"$TMP/startgated.toml" <<EOF
version = 1
[daemon]
socket = "$STARTGATE_SOCKET"
log_format = "console"
shutdown_timeout = "5s"
[metrics]
listen = ""
EOF

say "start startgated on $STARTGATE_SOCKET (log: startgated.log in the same directory)"
setsid "$BIN/startgated" --config "$TMP/startgated.toml" >"$TMP/startgated.log" 2>&1 </dev/null &
daemon_pid=$!
until_status '"queue_length"'

say "1) startgatectl status"
ctl status

say "pin the in-flight limit at 2 (and the rate high, so that only the slots pace this part)"
ctl set --inflight 2 --rate 100

say "2) pause the gate, then ask for six start slots"
ctl pause
# Each waits until it is queued, so the arrival order is fixed: the
# reverse of the class order, which is the order the gate grants in.
hold() { # class tenant what
	bg "$BIN/startgatectl" hold --class "$1" --tenant "$2" --description "start $3" \
		-- sh -c "echo '    started $3 ($1, $2)'; sleep 1"
}
hold critical kube-system coredns
n=0
for spec in "background team-c backup" "low team-b report" "normal team-b api" \
	"normal team-a web" "high team-a db"; do
	read -r class tenant what <<<"$spec"
	hold "$class" "$tenant" "$what"
	n=$((n + 1))
	until_status "\"queue_length\": $n,"
done
echo "    (critical passed the paused gate at once; the rest wait)"

say "startgatectl queue: the order they will be granted in"
ctl queue
say "startgatectl leases: the critical start holds a slot while paused"
ctl leases
until_status '"in_flight": 0,'

say "3) resume: the gate grants in class order, at most 2 at a time (startgatectl watch)"
bg "$BIN/startgatectl" watch
watch_pg=${pgroups[-1]}
sleep 0.5
ctl resume
sleep 3.5
stop_groups "$watch_pg"

say "4) unpin the limits (set --auto): pressure sizes them again"
ctl set --auto
if [[ $(ctl status -o json) == *'"pressure_error"'* ]]; then
	echo "    (this kernel has no PSI: the limits stay static and will not follow the CPU hog)"
fi
say "ten loops of 'startgatectl hold -- sleep 3' keep starts waiting, so the limit binds"
for i in $(seq 10); do
	bg bash -c "while :; do \"$BIN/startgatectl\" hold --tenant loops --description 'loop $i' -- sleep 3 || sleep 1; done"
done
status_every 3

cores=$(nproc)
say "CPU hog: $((2 * cores)) busy loops on $cores cores for 5 s; the limit drops"
for _ in $(seq $((2 * cores))); do
	bg sh -c 'while :; do :; done'
	hogs+=("${pgroups[-1]}")
done
status_every 5
stop_groups "${hogs[@]}"

say "hog stopped; the limit climbs back while starts wait"
status_every 4

say "5) startgatectl status (-o json for scripts)"
ctl status

say "stop the hold loops, then SIGTERM startgated"
stop_groups "${pgroups[@]}"
pgroups=()
kill -TERM "$daemon_pid"
rc=0
wait "$daemon_pid" || rc=$?
daemon_pid=""
echo "    startgated exited with status $rc; the last lines of its log:"
tail -n 2 "$TMP/startgated.log" | sed 's/^/    /'
if [[ -e $STARTGATE_SOCKET ]]; then
	echo "demo: startgated left its socket behind" >&2
	exit 1
fi
echo "    socket removed; nothing left running"
[[ $rc -eq 0 ]]
gate_secs=$SECONDS

say "PART 2: the CRI. A patch rollout: the app's tag gets a new 20 MB layer (the registry"
echo "    behind a 100 Mbit/s link), then 20 pods pull it and start at once, each a CPU-bound"
echo "    init of about 0.2 CPU-s, through kubelet's CRI client: straight to containerd"
echo "    (direct), through startgated's CRI proxy (startgate), and through it with the patch"
echo "    prefetched (startgate-prefetch)."
echo "    Progress below; the table follows."
# Ctrl-C reaches startgate-bench too (same foreground process group); it
# stops its pods, startgated, containerd and the registry before this
# script's trap runs. The chart goes to the demo's temporary directory's
# parent, so it outlives the cleanup.
chart=${TMPDIR:-/tmp}/startgate-demo.svg
"$BIN/startgate-bench" --pods 20 --modes direct,startgate,startgate-prefetch --rounds 1 --chart "$chart"

echo
echo "demo: done in ${SECONDS} s (the gate ${gate_secs} s, the CRI $((SECONDS - gate_secs)) s); nothing left running."
echo "demo: the chart (time to ready per mode): $chart"
echo "demo: the full benchmark (40 pods; direct, fixed-2/4/8, startgate, startgate-prefetch; 2 rounds): make bench"
