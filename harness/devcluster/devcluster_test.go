package devcluster

import (
	"bytes"
	"context"
	"os"
	"regexp"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"

	"github.com/startgate/startgate/harness/testbed"
	"github.com/startgate/startgate/harness/testbed/cluster"
	"github.com/startgate/startgate/internal/daemon"
	pb "github.com/startgate/startgate/proto/startgate/v1"
)

// The test binary re-executed is startgated, as startgate-cluster is.
func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		os.Exit(daemon.Main(os.Args[1:]))
	}
	goleak.VerifyTestMain(m)
}

// syncBuffer is Run's output, read while Run writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestRun is `make cluster` end to end: what it prints works (the
// kubeconfig, the image, the startgated socket), a pod started through it
// passes startgated's gate, and cancelling Run removes everything.
func TestRun(t *testing.T) {
	bin, err := cluster.CachedBinaries()
	if err == nil && os.Geteuid() != 0 {
		err = testbed.ErrUnsupported
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true: cannot run a cluster here: %v", err)
		}
		t.Skipf("cannot run a cluster here: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- Run(ctx, Options{Parent: "/tmp", KubeBin: bin}, out) }()
	deadline := time.After(4 * time.Minute)
	for !bytes.Contains([]byte(out.String()), []byte("Ctrl-C to stop")) {
		select {
		case err := <-done:
			t.Fatalf("Run returned before the cluster was up: %v\n%s", err, out)
		case <-deadline:
			cancel()
			t.Fatalf("Run: no cluster after 4 minutes; output:\n%s\nRun: %v", out, <-done)
		case <-time.After(100 * time.Millisecond):
		}
	}
	hints := out.String()
	find := func(re string) string {
		t.Helper()
		m := regexp.MustCompile(re).FindStringSubmatch(hints)
		if m == nil {
			t.Fatalf("output has no %s:\n%s", re, hints)
		}
		return m[1]
	}
	kubeconfig := find(`export KUBECONFIG=(\S+)`)
	image := find(`Image in the session's registry: (\S+)`)
	api := find(`--socket (\S+) status`)
	dir := find(`removes (\S+)\.\n`)

	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer hc.CloseIdleConnections()
	cs, err := kubernetes.NewForConfigAndClient(cfg, hc)
	if err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "sh", Namespace: "default"},
		Spec: corev1.PodSpec{
			HostNetwork:                   true,
			TerminationGracePeriodSeconds: ptr.To[int64](1),
			Containers:                    []corev1.Container{{Name: "sh", Image: image, Command: []string{"sleep", "3600"}}},
		},
	}
	if _, err := cs.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var last string
	for ready := false; !ready; {
		p, err := cs.CoreV1().Pods("default").Get(ctx, "sh", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range p.Status.Conditions {
			ready = ready || c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue
		}
		last = string(p.Status.Phase)
		select {
		case <-deadline:
			t.Fatalf("pod sh: got phase %s, want Ready", last)
		case <-time.After(200 * time.Millisecond):
		}
	}

	conn, err := grpc.NewClient("unix://"+api, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	st, err := pb.NewStartgateClient(conn).Status(ctx, &pb.StatusRequest{})
	if err != nil {
		t.Fatalf("startgated Status: %v", err)
	}
	if st.GetCounters().GetAdmitted() == 0 {
		t.Errorf("startgated admitted %d starts, want the pod's", st.GetCounters().GetAdmitted())
	}
	conn.Close()
	hc.CloseIdleConnections()

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run after cancel: %v\n%s", err, out)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("after Run: stat %s: got %v, want not exist", dir, err)
	}
	if pids, _ := testbed.ProcessesUsing(dir); len(pids) != 0 {
		t.Errorf("after Run: got processes %v naming %s, want none", pids, dir)
	}
}
