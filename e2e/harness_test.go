package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	internalapi "k8s.io/cri-api/pkg/apis"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	remote "k8s.io/cri-client/pkg"

	"github.com/startgate/startgate/harness/testbed"
)

// kubelet's --runtime-request-timeout default; RunPodSandbox gets twice
// this inside the CRI client, as in kubelet.
const criTimeout = 2 * time.Minute

var bins struct {
	dir        string
	startgated string
	ctl        string
}

func TestMain(m *testing.M) {
	if sock := os.Getenv(floodEnv); sock != "" {
		floodMain(sock)
		return
	}
	dir, err := os.MkdirTemp("", "sg-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bins.dir = dir
	bins.startgated = filepath.Join(dir, "startgated")
	bins.ctl = filepath.Join(dir, "startgatectl")
	for out, pkg := range map[string]string{bins.startgated: "../cmd/startgated", bins.ctl: "../cmd/startgatectl"} {
		cmd := exec.Command("go", "build", "-o", out, pkg)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n", pkg, err)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// node is a testbed containerd with startgated in front of it.
type node struct {
	t       testing.TB
	tb      *testbed.Testbed
	dir     string
	api     string // startgated's admin socket
	cri     string // startgated's CRI socket
	daemon  *exec.Cmd
	cfgPath string
	logf    *os.File
	logPath string
	rs      internalapi.RuntimeService
	is      internalapi.ImageManagerService // kubelet's image client, on the proxy
	image   string
}

type nodeOptions struct {
	// config is extra TOML appended to the generated config.
	config string
	// configFor, when set, returns more TOML for the config, once the
	// testbed runs and the node's paths are set (the snapshotter, the
	// CRI socket a kubelet is pointed at, are known only then).
	configFor func(n *node) string
	// testbed shapes the node's containerd (a small root, say).
	testbed testbed.Options
}

func startNode(t testing.TB, opts nodeOptions) *node {
	t.Helper()
	tb := testbed.StartT(t, opts.testbed)
	dir, err := os.MkdirTemp("", "sg-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	n := &node{t: t, tb: tb, dir: dir, api: filepath.Join(dir, "api.sock"), cri: filepath.Join(dir, "cri.sock"),
		logPath: filepath.Join(dir, "startgated.log"), image: "localhost/startgate/app:1"}
	cfg := filepath.Join(dir, "config.toml")
	conf := "version = 1\n[daemon]\nlog_format = \"json\"\nlog_level = \"debug\"\n" + opts.config
	if opts.configFor != nil {
		conf += opts.configFor(n)
	}
	if !strings.Contains(conf, "[metrics]") {
		// Metrics are on by default at a fixed port; the test daemons,
		// several at once, keep off it unless a test asks.
		conf += "[metrics]\nlisten = \"\"\n"
	}
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(n.logPath)
	if err != nil {
		t.Fatal(err)
	}
	n.cfgPath, n.logf = cfg, logf
	n.startDaemon()
	t.Cleanup(func() {
		_ = n.daemon.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- n.daemon.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("startgated exited with %v on SIGTERM; log:\n%s", err, n.logTail())
			}
		case <-time.After(20 * time.Second):
			_ = n.daemon.Process.Kill()
			<-done
			t.Errorf("startgated did not stop within 20s of SIGTERM; log:\n%s", n.logTail())
		}
		logf.Close()
	})
	n.eventually(20*time.Second, "startgated to serve both sockets", func() (bool, string) {
		_, errA := os.Stat(n.api)
		_, errC := os.Stat(n.cri)
		return errA == nil && errC == nil, fmt.Sprintf("api: %v, cri: %v", errA, errC)
	})
	ctx := context.Background()
	n.rs, err = remote.NewRemoteRuntimeServiceBuilder().
		WithEndpoint("unix://" + n.cri).
		WithConnectionTimeout(criTimeout).
		Build(ctx)
	if err != nil {
		t.Fatalf("kubelet's CRI client on the proxy: %v", err)
	}
	t.Cleanup(func() { _ = n.rs.Close(ctx) })
	n.is, err = remote.NewRemoteImageServiceBuilder().
		WithEndpoint("unix://" + n.cri).
		WithConnectionTimeout(criTimeout).
		Build(ctx)
	if err != nil {
		t.Fatalf("kubelet's CRI image client on the proxy: %v", err)
	}
	t.Cleanup(func() { _ = n.is.Close(ctx) })
	img, err := testbed.BusyboxImage()
	if err != nil {
		t.Fatal(err)
	}
	if err := tb.ImportImage(ctx, n.image, img); err != nil {
		t.Fatal(err)
	}
	return n
}

// startDaemon starts startgated on the node's config and sockets.
func (n *node) startDaemon() {
	n.t.Helper()
	n.daemon = exec.Command(bins.startgated, "--config", n.cfgPath, "--socket", n.api, "--cri-socket", n.cri,
		"--containerd-socket", n.tb.Endpoint())
	n.daemon.Stdout, n.daemon.Stderr = n.logf, n.logf
	if err := n.daemon.Start(); err != nil {
		n.t.Fatal(err)
	}
}

// killDaemon SIGKILLs startgated, as a crash or the OOM killer would, and
// starts it again on the same config and sockets.
func (n *node) killDaemon() {
	n.t.Helper()
	_ = n.daemon.Process.Kill()
	_ = n.daemon.Wait()
	n.startDaemon()
	n.eventually(20*time.Second, "startgated to answer again after a restart", func() (bool, string) {
		out, err := exec.Command(bins.ctl, "--socket", n.api, "status").CombinedOutput()
		return err == nil, string(out)
	})
}

func (n *node) logTail() string {
	b, _ := os.ReadFile(n.logPath)
	if len(b) > 8000 {
		b = b[len(b)-8000:]
	}
	return string(b)
}

// logLines returns the last max lines of startgated's log that contain
// substr and are not an API call's log line: a tail of the lines that
// matter when the startgatectl polls' lines drown them.
func (n *node) logLines(substr string, max int) string {
	b, _ := os.ReadFile(n.logPath)
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, substr) && !strings.Contains(l, "/startgate.v1.Startgate/") {
			out = append(out, l)
		}
	}
	if len(out) > max {
		out = out[len(out)-max:]
	}
	return strings.Join(out, "\n")
}

// ctl runs the real startgatectl against the node's admin socket.
func (n *node) ctl(args ...string) string {
	n.t.Helper()
	out, err := exec.Command(bins.ctl, append([]string{"--socket", n.api}, args...)...).CombinedOutput()
	if err != nil {
		n.t.Fatalf("startgatectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

type gateStatus struct {
	InFlight      int  `json:"in_flight"`
	InFlightLimit int  `json:"in_flight_limit"`
	QueueLength   int  `json:"queue_length"`
	Paused        bool `json:"paused"`
	Counters      struct {
		Admitted uint64 `json:"admitted"`
	} `json:"counters"`
}

func (n *node) status() gateStatus {
	n.t.Helper()
	var s gateStatus
	if err := json.Unmarshal([]byte(n.ctl("status", "-o", "json")), &s); err != nil {
		n.t.Fatalf("status -o json: %v", err)
	}
	return s
}

type waiter struct {
	Class       string `json:"class"`
	Tenant      string `json:"tenant"`
	Description string `json:"description"`
}

func (n *node) queue() []waiter {
	n.t.Helper()
	var q []waiter
	if err := json.Unmarshal([]byte(n.ctl("queue", "-o", "json")), &q); err != nil {
		n.t.Fatalf("queue -o json: %v", err)
	}
	return q
}

type event struct {
	Type          string `json:"type"`
	Class         string `json:"class"`
	Description   string `json:"description"`
	Reason        string `json:"reason"`
	InFlight      int    `json:"in_flight"`
	InFlightLimit int    `json:"in_flight_limit"`
}

// watch records the daemon's events (startgatectl watch -o json) until the
// returned stop is called, which returns them.
func (n *node) watch() (stop func() []event) {
	n.t.Helper()
	cmd := exec.Command(bins.ctl, "--socket", n.api, "watch", "-o", "json")
	out, err := cmd.StdoutPipe()
	if err != nil {
		n.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	var mu sync.Mutex
	var evs []event
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var e event
			if json.Unmarshal(sc.Bytes(), &e) == nil {
				mu.Lock()
				evs = append(evs, e)
				mu.Unlock()
			}
		}
	}()
	// The watch is live once it sees the policy event a set produces; the
	// first sets may come before it has subscribed.
	n.eventually(10*time.Second, "the watch to be live", func() (bool, string) {
		n.ctl("set", "--aging", "10s")
		time.Sleep(100 * time.Millisecond) // let the event arrive before looking
		mu.Lock()
		defer mu.Unlock()
		return len(evs) > 0, fmt.Sprintf("%d events", len(evs))
	})
	var once sync.Once
	stopFn := func() []event {
		once.Do(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			<-done
			_ = cmd.Wait()
		})
		mu.Lock()
		defer mu.Unlock()
		return append([]event(nil), evs...)
	}
	n.t.Cleanup(func() { stopFn() })
	return stopFn
}

// grantsWithinLimit fails the test for every grant (reason "granted", not
// a deadline or critical pass) that took the gate over its in-flight
// limit, and returns how many grants the events hold.
func grantsWithinLimit(t testing.TB, evs []event) int {
	t.Helper()
	grants := 0
	for _, e := range evs {
		if e.Type != "granted" {
			continue
		}
		grants++
		if e.Reason == "granted" && e.InFlight > e.InFlightLimit {
			t.Errorf("grant of %q brought in-flight to %d, over the limit %d", e.Description, e.InFlight, e.InFlightLimit)
		}
	}
	return grants
}

func (n *node) eventually(d time.Duration, what string, cond func() (bool, string)) {
	n.t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, got := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("%s: not true after %v; last seen: %s\nstartgated log tail:\n%s", what, d, got, n.logTail())
		}
		<-tick.C
	}
}

// pod describes a host-network pod for the testbed.
func (n *node) sandboxConfig(ns, name string, ann map[string]string) *runtimeapi.PodSandboxConfig {
	return &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: name, Namespace: ns, Uid: ns + "-" + name + "-uid"},
		LogDirectory: filepath.Join(n.tb.Dir(), "pods", ns+"_"+name),
		Annotations:  ann,
		Linux:        testbed.HostNetwork(),
	}
}

func (n *node) containerConfig(name string, cmd ...string) *runtimeapi.ContainerConfig {
	return n.containerConfigOf(name, n.image, cmd...)
}

func (n *node) containerConfigOf(name, image string, cmd ...string) *runtimeapi.ContainerConfig {
	return &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: name},
		Image:    &runtimeapi.ImageSpec{Image: image},
		Command:  cmd,
		LogPath:  name + ".log",
	}
}

// runPod runs a pod with one container through the proxy, as kubelet
// does, and returns the sandbox and container IDs.
func (n *node) runPod(ctx context.Context, ns, name string, ann map[string]string, cmd ...string) (string, string, error) {
	return n.runPodOf(ctx, ns, name, n.image, ann, cmd...)
}

// runPodOf is runPod with the container's image named.
func (n *node) runPodOf(ctx context.Context, ns, name, image string, ann map[string]string, cmd ...string) (string, string, error) {
	sb := n.sandboxConfig(ns, name, ann)
	if err := os.MkdirAll(sb.LogDirectory, 0o755); err != nil {
		return "", "", err
	}
	sbID, err := n.rs.RunPodSandbox(ctx, sb, "")
	if err != nil {
		return "", "", fmt.Errorf("RunPodSandbox %s/%s: %w", ns, name, err)
	}
	cID, err := n.rs.CreateContainer(ctx, sbID, n.containerConfigOf("app", image, cmd...), sb)
	if err != nil {
		return sbID, "", fmt.Errorf("CreateContainer %s/%s: %w", ns, name, err)
	}
	if err := n.rs.StartContainer(ctx, cID); err != nil {
		return sbID, cID, fmt.Errorf("StartContainer %s/%s: %w", ns, name, err)
	}
	return sbID, cID, nil
}

func (n *node) logOf(ns, name string) string {
	b, _ := os.ReadFile(filepath.Join(n.tb.Dir(), "pods", ns+"_"+name, "app.log"))
	return string(bytes.TrimSpace(b))
}
