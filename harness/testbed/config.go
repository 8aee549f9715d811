package testbed

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// configTOML renders the containerd config (version 2) for a testbed rooted
// at dir. Every path containerd or runc would otherwise take from the host
// (/opt/containerd, /run/containerd/runc, /etc/cni/net.d) points into dir,
// so testbeds never share state with each other or with a system containerd.
func configTOML(dir, snapshotter, sandboxImage string, debug bool) string {
	level := "info"
	if debug {
		level = "debug"
	}
	q := strconv.Quote
	return fmt.Sprintf(`version = 2
root = %[1]s
state = %[2]s
# Plugins that cannot work here and only add errors to the log.
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = %[3]s

[debug]
  level = %[4]s

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = %[5]s

  [plugins."io.containerd.grpc.v1.cri"]
    restrict_oom_score_adj = true
    sandbox_image = %[6]s
    netns_mounts_under_state_dir = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"

    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = %[7]s
      conf_dir = %[8]s

    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = %[9]s
      default_runtime_name = "runc"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"

        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          Root = %[10]s
`,
		q(filepath.Join(dir, "root")),
		q(filepath.Join(dir, "state")),
		q(filepath.Join(dir, socketName)),
		q(level),
		q(filepath.Join(dir, "opt")),
		q(sandboxImage),
		q(filepath.Join(dir, "cni", "bin")),
		q(filepath.Join(dir, "cni", "net.d")),
		q(snapshotter),
		q(filepath.Join(dir, "runc")),
	)
}

// probeOverlay reports whether an overlay mount works under dir: some VMs
// and unprivileged containers refuse it (or refuse it on this filesystem),
// and then the native snapshotter is the one that works.
func probeOverlay(dir string) error {
	p, err := os.MkdirTemp(dir, "ovl")
	if err != nil {
		return err
	}
	defer os.RemoveAll(p)
	for _, d := range []string{"lower", "upper", "work", "merged"} {
		if err := os.Mkdir(filepath.Join(p, d), 0o700); err != nil {
			return err
		}
	}
	data := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s",
		filepath.Join(p, "lower"), filepath.Join(p, "upper"), filepath.Join(p, "work"))
	merged := filepath.Join(p, "merged")
	if err := unix.Mount("overlay", merged, "overlay", 0, data); err != nil {
		return fmt.Errorf("testbed: overlay mount: %w", err)
	}
	return unix.Unmount(merged, unix.MNT_DETACH)
}
