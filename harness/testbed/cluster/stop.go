package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"

	"github.com/startgate/startgate/harness/testbed"
)

// controlPlaneGrace is how long a control-plane process gets between
// SIGTERM and SIGKILL: the apiserver drains for a few seconds.
const controlPlaneGrace = 10 * time.Second

// containerLogLinks is where kubelet links every container's log,
// whatever its root dir (pkg/kubelet/kuberuntime.ContainerLogsDir).
const containerLogLinks = "/var/log/containers"

// Stop stops the kubelet, then the scheduler, controller-manager,
// apiserver and etcd; removes the CNI conflist Start wrote, kubelet's log
// links to this cluster's pods, every mount under the directory and the
// directory. It deletes nothing through the runtime: pods keep running
// until the runtime's owner removes them (the containerd testbed's Stop
// does). It goes on after errors and returns them all; later calls return
// the first call's result.
func (c *Cluster) Stop(ctx context.Context) error {
	c.stopOnce.Do(func() { c.stopErr = c.stop(ctx) })
	return c.stopErr
}

func (c *Cluster) stop(ctx context.Context) error {
	var errs []error
	if c.transport != nil {
		c.transport.CloseIdleConnections()
	}
	errs = append(errs, c.StopKubelet(ctx))
	for i := len(c.controlPlane) - 1; i >= 0; i-- {
		errs = append(errs, c.controlPlane[i].stop(ctx, controlPlaneGrace))
	}
	if c.transport != nil {
		c.transport.CloseIdleConnections() // those the shutdown raced with
	}
	if c.cniFile != "" {
		if err := os.Remove(c.cniFile); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("cluster: %w", err))
		}
	}
	errs = append(errs, removeLogLinks(containerLogLinks, c.dir))
	errs = append(errs, killUsing(ctx, c.dir))
	errs = append(errs, detachMounts(c.dir))
	if err := os.RemoveAll(c.dir); err != nil {
		errs = append(errs, fmt.Errorf("cluster: remove %s: %w", c.dir, err))
	}
	return errors.Join(errs...)
}

// removeLogLinks removes the symlinks in linkDir that point under dir:
// kubelet links each container's log there and removes the link only when
// it removes the container, which, with the cluster stopped first, it
// never does.
func removeLogLinks(linkDir, dir string) error {
	ents, err := os.ReadDir(linkDir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("cluster: %w", err)
	}
	var errs []error
	for _, e := range ents {
		if e.Type()&os.ModeSymlink == 0 {
			continue
		}
		p := filepath.Join(linkDir, e.Name())
		target, err := os.Readlink(p)
		if err != nil || !strings.HasPrefix(target, dir+"/") {
			continue
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("cluster: remove log link: %w", err))
		}
	}
	return errors.Join(errs...)
}

// killUsing SIGKILLs what is left of the cluster's processes (nothing,
// when every component stopped; a child that left its process group
// otherwise): any process running one of Commands or etcd with an
// argument under dir, and waits until they are gone. Other processes
// naming dir, a `tail -f DIR/kubelet.log` say, are not the cluster's.
func killUsing(ctx context.Context, dir string) error {
	ours := func() ([]int, error) {
		pids, err := testbed.ProcessesUsing(dir)
		if err != nil {
			return nil, err
		}
		var out []int
		for _, pid := range pids {
			p, err := procfs.NewProc(pid)
			if err != nil {
				continue
			}
			args, err := p.CmdLine()
			if err != nil || len(args) == 0 {
				continue
			}
			if name := filepath.Base(args[0]); name == Etcd || slices.Contains(Commands, name) {
				out = append(out, pid)
			}
		}
		return out, nil
	}
	pids, err := ours()
	if err != nil || len(pids) == 0 {
		return err
	}
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		left, err := ours()
		if err != nil || len(left) == 0 {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster: processes %v still alive after SIGKILL", left)
		case <-tick.C:
		}
	}
}

// detachMounts detaches every mount at or under dir, deepest first:
// kubelet mounts a tmpfs for each projected, secret or configMap volume
// under DIR/kubelet/pods, and leaves them when it stops.
func detachMounts(dir string) error {
	mounts, err := testbed.MountsUnder(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, m := range mounts {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("cluster: unmount %s: %w", m, err))
		}
	}
	return errors.Join(errs...)
}
