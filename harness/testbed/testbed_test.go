package testbed

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	internalapi "k8s.io/cri-api/pkg/apis"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	remote "k8s.io/cri-client/pkg"
	"k8s.io/klog/v2/ktesting"
)

// criTimeout is the per-call timeout of the CRI client, as kubelet's
// runtime-request-timeout (RunPodSandbox gets twice this).
const criTimeout = 30 * time.Second

func newCRIClient(ctx context.Context, t *testing.T, tb *Testbed) internalapi.RuntimeService {
	t.Helper()
	rs, err := remote.NewRemoteRuntimeServiceBuilder().
		WithEndpoint("unix://" + tb.Endpoint()).
		WithConnectionTimeout(criTimeout).
		WithTracerProvider(nil).
		Build(ctx)
	if err != nil {
		t.Fatalf("cri client: %v", err)
	}
	t.Cleanup(func() { _ = rs.Close(ctx) })
	return rs
}

// eventually polls cond every 20ms until it returns true or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, got := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after %v; last seen: %s", what, d, got)
		}
		<-tick.C
	}
}

func hostNetworkSandbox(tb *Testbed, name string) *runtimeapi.PodSandboxConfig {
	return &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "default", Uid: name + "-uid"},
		LogDirectory: filepath.Join(tb.Dir(), "pods", name),
		Linux:        HostNetwork(),
	}
}

// runPod imports a busybox image, runs a pod whose container echoes
// "ready" and sleeps, and waits for it to be Running with "ready" in its
// log. It returns the sandbox and container IDs.
func runPod(ctx context.Context, t *testing.T, tb *Testbed, rs internalapi.RuntimeService, name string) (string, string) {
	t.Helper()
	img, err := BusyboxImage()
	if err != nil {
		t.Fatal(err)
	}
	const ref = "localhost/startgate/busybox:1"
	if err := tb.ImportImage(ctx, ref, img); err != nil {
		t.Fatal(err)
	}
	sbCfg := hostNetworkSandbox(tb, name)
	sb, err := rs.RunPodSandbox(ctx, sbCfg, "")
	if err != nil {
		t.Fatalf("RunPodSandbox: %v\n%s", err, tail(tb))
	}
	cCfg := &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: "main"},
		Image:    &runtimeapi.ImageSpec{Image: ref},
		Command:  []string{"sh", "-c", "echo ready; sleep 30"},
		LogPath:  "main.log",
	}
	ctr, err := rs.CreateContainer(ctx, sb, cCfg, sbCfg)
	if err != nil {
		t.Fatalf("CreateContainer: %v\n%s", err, tail(tb))
	}
	if err := rs.StartContainer(ctx, ctr); err != nil {
		t.Fatalf("StartContainer: %v\n%s", err, tail(tb))
	}
	eventually(t, 10*time.Second, "container running", func() (bool, string) {
		st, err := rs.ContainerStatus(ctx, ctr, false)
		if err != nil {
			return false, err.Error()
		}
		return st.GetStatus().GetState() == runtimeapi.ContainerState_CONTAINER_RUNNING, st.GetStatus().GetState().String()
	})
	logPath := filepath.Join(sbCfg.LogDirectory, cCfg.LogPath)
	eventually(t, 10*time.Second, "\"ready\" in "+logPath, func() (bool, string) {
		b, err := os.ReadFile(logPath)
		if err != nil {
			return false, err.Error()
		}
		// CRI log format: "<RFC3339Nano> stdout F ready".
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.SplitN(line, " ", 4); len(f) == 4 && f[1] == "stdout" && f[2] == "F" && f[3] == "ready" {
				return true, ""
			}
		}
		return false, string(b)
	})
	return sb, ctr
}

func tail(tb *Testbed) string {
	b, _ := tb.logTail(4 << 10)
	return string(b)
}

// TestPodEndToEnd runs a pod with the probed snapshotter (overlayfs here)
// and with native, the fallback for machines without overlay mounts.
func TestPodEndToEnd(t *testing.T) {
	for _, snapshotter := range []string{"", "native"} {
		t.Run("snapshotter="+snapshotter, func(t *testing.T) { testPodEndToEnd(t, snapshotter) })
	}
}

func testPodEndToEnd(t *testing.T, snapshotter string) {
	_, ctx := ktesting.NewTestContext(t)
	t0 := time.Now()
	tb := StartT(t, Options{Snapshotter: snapshotter})
	t.Logf("Start (cold): %v, snapshotter %s, dir %s", time.Since(t0).Round(time.Millisecond), tb.Snapshotter(), tb.Dir())

	rs := newCRIClient(ctx, t, tb)
	v, err := rs.Version(ctx, "")
	if err != nil {
		t.Fatalf("Version: %v", err)
	}
	if v.GetRuntimeName() != "containerd" || v.GetRuntimeApiVersion() != "v1" {
		t.Errorf("Version: got runtime %q API %q, want containerd v1", v.GetRuntimeName(), v.GetRuntimeApiVersion())
	}

	t1 := time.Now()
	sb, ctr := runPod(ctx, t, tb, rs, "smoke")
	resp, err := rs.Exec(ctx, &runtimeapi.ExecRequest{ContainerId: ctr, Cmd: []string{"echo", "hi"}, Stdout: true})
	if err != nil {
		t.Fatalf("Exec: %v", err)
	}
	if !strings.HasPrefix(resp.GetUrl(), "http://127.0.0.1:") {
		t.Errorf("Exec: got URL %q, want http://127.0.0.1:PORT/...", resp.GetUrl())
	}
	if err := rs.StopPodSandbox(ctx, sb); err != nil {
		t.Fatalf("StopPodSandbox: %v", err)
	}
	if err := rs.RemovePodSandbox(ctx, sb); err != nil {
		t.Fatalf("RemovePodSandbox: %v", err)
	}
	t.Logf("one pod end to end (import, run, create, start, ready, exec, stop, remove): %v", time.Since(t1).Round(time.Millisecond))
	items, err := rs.ListPodSandbox(ctx, nil)
	if err != nil {
		t.Fatalf("ListPodSandbox: %v", err)
	}
	if len(items) != 0 {
		t.Errorf("ListPodSandbox after remove: got %d sandboxes, want 0", len(items))
	}

	// A "patch": the same ref imported again with one more layer.
	patch, err := Layer(File{Path: "etc/patched", Data: []byte("1\n")})
	if err != nil {
		t.Fatal(err)
	}
	img, err := BusyboxImage(patch)
	if err != nil {
		t.Fatal(err)
	}
	if err := tb.ImportImage(ctx, "localhost/startgate/busybox:1", img); err != nil {
		t.Fatalf("re-import: %v", err)
	}

	t2 := time.Now()
	if err := tb.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	t.Logf("Stop: %v", time.Since(t2).Round(time.Millisecond))
	assertNothingLeft(t, tb.Dir())
}

// TestStopLeavesNothing stops testbeds whose pod is still running, as after
// a failed test: once with containerd up (the CRI removes the pod), once
// after containerd was killed, the worst case, where the shims and their
// containers, the rootfs and shm mounts, the shim sockets and the cgroups
// are Stop's to clean.
func TestStopLeavesNothing(t *testing.T) {
	for _, tc := range []struct {
		name string
		kill bool
	}{
		{"containerd up", false},
		{"containerd killed", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, ctx := ktesting.NewTestContext(t)
			tb := StartT(t, Options{})
			rs := newCRIClient(ctx, t, tb)
			runPod(ctx, t, tb, rs, "leak")

			pids, err := ProcessesUsing(tb.Dir())
			if err != nil {
				t.Fatal(err)
			}
			if len(pids) < 2 { // containerd and at least one shim
				t.Fatalf("before Stop: got processes %v using %s, want containerd and shims", pids, tb.Dir())
			}
			mounts, err := MountsUnder(tb.Dir())
			if err != nil {
				t.Fatal(err)
			}
			if len(mounts) == 0 {
				t.Fatalf("before Stop: got no mounts under %s, want the pod's", tb.Dir())
			}
			left := findLeftovers(tb.Dir())
			if len(left.sockets) == 0 || len(left.cgroups) == 0 {
				t.Fatalf("before Stop: got shim sockets %v and cgroups %v, want some of each", left.sockets, left.cgroups)
			}
			if tc.kill {
				if err := tb.Kill(); err != nil {
					t.Fatal(err)
				}
			}

			t0 := time.Now()
			if err := tb.Stop(ctx); err != nil {
				t.Fatalf("Stop: %v", err)
			}
			t.Logf("Stop with a running pod (%d mounts, %d processes): %v", len(mounts), len(pids), time.Since(t0).Round(time.Millisecond))
			assertNothingLeft(t, tb.Dir())
			for _, p := range append(left.sockets, left.cgroups...) {
				if _, err := os.Stat(p); !os.IsNotExist(err) {
					t.Errorf("after Stop: stat %s: got %v, want not exist", p, err)
				}
			}
		})
	}
}

func assertNothingLeft(t *testing.T, dir string) {
	t.Helper()
	pids, err := ProcessesUsing(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		cmd, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
		t.Errorf("after Stop: process %d still refers to %s: %s", pid, dir, bytes.ReplaceAll(cmd, []byte{0}, []byte{' '}))
	}
	mounts, err := MountsUnder(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(mounts) != 0 {
		t.Errorf("after Stop: got mounts %v under %s, want none", mounts, dir)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("after Stop: stat %s: got %v, want not exist", dir, err)
	}
}

// TestStartFailure: a containerd that dies at once makes Start fail with
// the tail of its log, and leaves nothing under Options.Parent.
func TestStartFailure(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("testbed: Start needs root")
	}
	parent := t.TempDir()
	fake := filepath.Join(parent, "fake-containerd")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\necho 'level=fatal msg=\"boom: no such thing\"'\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	bedParent := filepath.Join(parent, "beds")
	if err := os.Mkdir(bedParent, 0o700); err != nil {
		t.Fatal(err)
	}
	tb, err := Start(context.Background(), Options{Parent: bedParent, Containerd: fake, StartTimeout: 10 * time.Second})
	if err == nil {
		_ = tb.Stop(context.Background())
		t.Fatal("Start with a containerd that exits: got no error")
	}
	if !strings.Contains(err.Error(), "exited before its CRI answered") || !strings.Contains(err.Error(), "boom: no such thing") {
		t.Errorf("Start error: got %q, want the exit and the log tail", err)
	}
	ents, _ := os.ReadDir(bedParent)
	if len(ents) != 0 {
		t.Errorf("after failed Start: got %d entries in %s, want none", len(ents), bedParent)
	}
}

// Kill is a containerd crash; Restart brings it back on the same state,
// with the running pod still there.
func TestKillAndRestart(t *testing.T) {
	ctx := context.Background()
	tb := StartT(t, Options{})
	rs := newCRIClient(ctx, t, tb)
	sbID, _ := runPod(ctx, t, tb, rs, "survivor")
	if err := tb.Kill(); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	vctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	_, err := rs.Version(vctx, "v1")
	cancel()
	if err == nil {
		t.Fatalf("Version answered with containerd killed")
	}
	if err := tb.Restart(ctx); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	eventually(t, 30*time.Second, "the pod to be listed after the restart", func() (bool, string) {
		st, err := rs.PodSandboxStatus(ctx, sbID, false)
		if err != nil {
			return false, err.Error()
		}
		return st.GetStatus().GetState() == runtimeapi.PodSandboxState_SANDBOX_READY, st.GetStatus().GetState().String()
	})
}
