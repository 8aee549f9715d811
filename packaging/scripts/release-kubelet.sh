# release_kubelet (put into the deb's prerm and the rpm's preun at the
# #RELEASE_KUBELET# line by make package): before startgated goes away,
# point kubelet back at containerd if `startgatectl node enable` switched
# it. Removal must never wedge, so this fails only when kubelet would be
# left pointing at startgated's socket, which nothing serves once the
# package is gone (startgatectl node status: "enabled"); any other
# failure (a broken record, no kubelet, a kubelet that did not restart) is
# reported with what to run, and the removal goes on.
release_kubelet() {
	command -v startgatectl >/dev/null 2>&1 || return 0
	if out=$(startgatectl node disable --restart-kubelet --if-enabled 2>&1); then
		[ -z "$out" ] || printf '%s\n' "$out"
		disabled=yes
	else
		printf 'startgate: startgatectl node disable --restart-kubelet --if-enabled failed:\n%s\n' "$out" >&2
		disabled=no
	fi
	# Asked even after a disable that succeeded: kubelet may have been
	# pointed at startgated by hand, which disable does not undo.
	if ! st=$(startgatectl node status -o json 2>&1); then
		printf 'startgate: startgatectl node status failed:\n%s\n' "$st" >&2
		echo "startgate: cannot tell where kubelet points; removing anyway. If kubelet's container" >&2
		echo "startgate: runtime endpoint is unix:///run/startgate/cri.sock, set it back to containerd's" >&2
		echo "startgate: (unix:///run/containerd/containerd.sock) and run: systemctl restart kubelet" >&2
		return 0
	fi
	case $st in
	*'"enabled": true'*)
		echo "startgate: kubelet points at startgated's CRI socket: removing startgate now would leave" >&2
		echo "startgate: this node without a container runtime, so the removal stops here. Run" >&2
		echo "startgate:   startgatectl node disable --restart-kubelet" >&2
		echo "startgate: (or, if kubelet was pointed there by hand, set its endpoint back to containerd's;" >&2
		echo "startgate: startgatectl node status shows where it is set), then remove the package again." >&2
		return 1
		;;
	esac
	if [ "$disabled" = no ]; then
		echo "startgate: kubelet's files point at containerd; removing. If kubelet still runs on" >&2
		echo "startgate: startgated's socket, run: systemctl restart kubelet" >&2
	fi
	return 0
}
