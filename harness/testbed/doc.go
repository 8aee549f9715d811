// Package testbed runs a private containerd with a working CRI for the CRI
// proxy's e2e tests, the demo and the benchmark: real runc containers,
// host-network pods, no internet, no systemd.
//
// # Life
//
// Start creates /tmp/sgtb-NNN (short on purpose: the socket path, plus
// containerd's ".ttrpc" twin, must fit in the 107 bytes of sun_path),
// writes config.toml, runs
//
//	containerd --config DIR/config.toml --root DIR/root --state DIR/state --address DIR/containerd.sock
//
// with its output in DIR/containerd.log, polls the CRI Version until it
// answers, and imports a busybox pause image under the sandbox image name.
// Errors from Start carry the tail of that log.
//
// # Config, and why
//
//   - restrict_oom_score_adj = true: lowering oom_score_adj is denied in
//     VMs and containers like CI's, and without this every RunPodSandbox
//     fails in runc ("can't get final child's PID from pipe: EOF").
//   - sandbox_image = localhost/startgate/pause:1, imported by Start: the default
//     registry.k8s.io/pause cannot be pulled offline.
//   - snapshotter: overlayfs when a probe overlay mount in DIR works, else
//     native (slower, copies each layer, but works on any filesystem).
//   - CNI bin_dir and conf_dir point at dirs in DIR, so the host's
//     /etc/cni never leaks in. Host-network pods (NamespaceMode_NODE)
//     need no CNI. When the host has Debian's containernetworking-plugins,
//     Start links them into DIR's bin_dir and writes a bridge network of
//     the testbed's own (network.go): pods then get an IP on a /24 whose
//     gateway is the host, so a kubelet's HTTP and TCP probes reach them;
//     Stop deletes the bridge. Without the plugins, pod-network sandboxes
//     fail.
//   - runc's Root is DIR/runc, the opt plugin's path DIR/opt and netns
//     mounts go under the state dir, so two testbeds, or a testbed and the
//     host's containerd, share nothing on disk but what containerd 1.6
//     hard-codes (see Stop).
//   - stream_server_port = "0": Exec and Attach URLs get a free loopback
//     port, so testbeds run side by side.
//   - unused snapshotters (aufs, btrfs, zfs, devmapper) and tracing are
//     disabled: they can only fail here and fill the log.
//
// # Images
//
// BusyboxImage builds an OCI image (go-containerregistry) from Debian's
// /bin/busybox with applet symlinks; Layer adds files. ImportImage streams
// an OCI layout tar into containerd's import (namespace k8s.io), unpacks
// it into the CRI's snapshotter and waits until the CRI's ImageStatus sees
// it: the CRI learns of imported images from events, asynchronously.
//
// # What Stop guarantees
//
// Stop (StartT calls it in t.Cleanup, also after a failed test) leaves no
// process whose command line refers to DIR, no mount under DIR, and no DIR:
//
//  1. every pod sandbox is stopped and removed through the CRI, if
//     containerd is still up;
//  2. containerd gets SIGTERM, then SIGKILL after 5 s;
//  3. shims outlive containerd: every containerd-shim whose command line
//     names DIR is killed, its containers first (while the shim is alive
//     to reap them; orphans wait for PID 1, which here reaps slowly), the
//     shim last;
//  4. what killed shims leave outside DIR is removed: their sockets in
//     /run/containerd/s (containerd 1.6 puts them there whatever its state
//     dir) and runc's cgroups under /sys/fs/cgroup/*/k8s.io, both read
//     from DIR before the kill;
//  5. every mount under DIR is detached (MNT_DETACH), deepest first;
//  6. DIR is removed.
//
// Errors are collected, not fatal: Stop always runs every step. containerd
// is started with Pdeathsig, so a test binary killed by its timeout takes
// containerd along; its shims then survive until the next Stop-less
// cleanup by hand (look for -address /tmp/sgtb-).
//
// # Registry
//
// StartRegistry runs Debian's docker-registry (CNCF distribution 2.8) on a
// free loopback port with storage in /tmp/sgreg-NNN and, optionally, push
// notifications to a URL with a bearer token; Push and Patch (the same tag
// pushed again with its last layer replaced: what a security patch looks
// like) write images to it with go-containerregistry. containerd 1.6's CRI
// pulls from 127.0.0.1:PORT over plain HTTP with no registry config.
// registry.go has the details.
//
// StartT skips the test when the machine cannot host a testbed (not root,
// no containerd or runc), except under CI=true, where it fails: CI must not
// turn the e2e suite into silent skips.
package testbed
