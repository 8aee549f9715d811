# release_kubelet (put into the deb's prerm and the rpm's preun at the
# #RELEASE_KUBELET# line by make package): before startgated goes away,
# point kubelet back at containerd if `startgatectl node enable` switched
# it. Removal must never wedge, so this fails only when kubelet would be
# left pointing at startgated's socket, which nothing will serve once the
# package is gone; any other failure (a broken record, no kubelet, a
# kubelet that did not restart) is reported with what to run, and the
# removal goes on.
release_kubelet() {
	command -v startgatectl >/dev/null 2>&1 || return 0
	if out=$(startgatectl node disable --restart-kubelet --if-enabled 2>&1); then
		[ -z "$out" ] || printf '%s\n' "$out"
		return 0
	fi
	printf 'startgate: startgatectl node disable --restart-kubelet --if-enabled failed:\n%s\n' "$out" >&2
	if ! st=$(startgatectl node status -o json 2>&1); then
		printf 'startgate: and startgatectl node status failed too:\n%s\n' "$st" >&2
		echo "startgate: cannot tell where kubelet points; removing anyway. If kubelet's container" >&2
		echo "startgate: runtime endpoint is unix:///run/startgate/cri.sock, set it back to containerd's" >&2
		echo "startgate: (unix:///run/containerd/containerd.sock) and run: systemctl restart kubelet" >&2
		return 0
	fi
	case $st in
	*'"enabled": true'*)
		echo "startgate: kubelet still points at startgated's CRI socket: removing startgate now would" >&2
		echo "startgate: leave this node without a container runtime, so the removal stops here." >&2
		echo "startgate: Fix what the error above says, run" >&2
		echo "startgate:   startgatectl node disable --restart-kubelet" >&2
		echo "startgate: (startgatectl node status shows where the endpoint is set), then remove the package again." >&2
		return 1
		;;
	esac
	echo "startgate: kubelet's files point at containerd; removing. If kubelet still runs on" >&2
	echo "startgate: startgated's socket, run: systemctl restart kubelet" >&2
	return 0
}
