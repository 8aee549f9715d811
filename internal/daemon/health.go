package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/startgate/startgate/internal/admission"
	"github.com/startgate/startgate/internal/healthz"
)

// The health checks served beside /metrics on metrics.listen, in
// kubelet's and the API server's form (package healthz):
//
//   - /healthz and /livez: the daemon's own loops are alive, that is the
//     admission controller ticks. It is the signal the systemd watchdog
//     ping is sent on (controllerTicking), so a liveness probe and the
//     watchdog never disagree. /healthz is kubelet's name, /livez the API
//     server's; both answer the same.
//   - /readyz: live, not shutting down, and kubelet's path works: the CRI
//     socket is served and containerd answers a CRI Version on its own
//     socket. Without the CRI proxy, only the first two.
//
// Failing open is reported, not hidden. A controller that stops ticking
// makes the gate fail open: kubelet's starts pass to containerd without a
// slot (startgate_cri_fail_open_total{reason="gate-stuck"}), so the node
// still starts containers, and "[-]admission failed" fails all three
// endpoints while the watchdog withholds its ping and systemd restarts the
// daemon. A gate an operator bypassed (startgatectl bypass on) fails open
// by choice: "[+]admission ok" and a "warn: admission: bypassed ..." line
// in the verbose answer.
//
// /readyz is for people and monitoring, not for restarts: containerd down
// fails it, and restarting startgated would not bring containerd back.

// liveGate is what the checks need of the gate; both methods take no
// lock, so a wedged gate cannot hang a probe.
type liveGate interface {
	Alive(now time.Time) bool
	Bypassed() bool
}

var _ liveGate = (*admission.Gate)(nil)

// controllerTicking is the daemon's liveness: nil while the admission
// controller ticks (admission.Gate.Alive: ten intervals, at least two
// seconds, without a tick is stuck). The watchdog ping and /healthz both
// read it.
func controllerTicking(g liveGate, now time.Time) error {
	if g.Alive(now) {
		return nil
	}
	return errors.New("the admission controller has stopped ticking: the limits are frozen and kubelet's starts " +
		"pass to containerd without a slot (fail open) until startgated is restarted")
}

// health holds what the checks read. Its zero cri means no CRI proxy.
type health struct {
	gate liveGate
	now  func() time.Time
	// stopping is set when the daemon begins to shut down.
	stopping atomic.Bool
	cri      *criReadiness
}

func (h *health) admission(*http.Request) error {
	if err := controllerTicking(h.gate, h.now()); err != nil {
		return err
	}
	if h.gate.Bypassed() {
		return healthz.Warning(errors.New("bypassed by an operator (startgatectl bypass on): starts pass to containerd without a slot"))
	}
	return nil
}

func (h *health) shutdown(*http.Request) error {
	if h.stopping.Load() {
		return errors.New("startgated is shutting down")
	}
	return nil
}

// install serves /healthz, /livez and /readyz on mux.
func (h *health) install(mux *http.ServeMux, log *zap.Logger) {
	live := []healthz.Check{healthz.Ping, {Name: "admission", Func: h.admission}}
	ready := append(append([]healthz.Check{}, live...), healthz.Check{Name: "shutdown", Func: h.shutdown})
	if h.cri != nil {
		ready = append(ready,
			healthz.Check{Name: "cri-socket", Func: h.cri.socketServed},
			healthz.Check{Name: "containerd", Func: h.cri.containerdAnswers})
	}
	healthz.Install(mux, "/healthz", log, live...)
	healthz.Install(mux, "/livez", log, live...)
	healthz.Install(mux, "/readyz", log, ready...)
}

// criCheckTimeout bounds each CRI check: kubelet's own runtime calls
// time out after 2 minutes, but a probe wants its answer now, and a
// containerd that takes seconds to answer Version is not ready.
const criCheckTimeout = 2 * time.Second

// criReadiness checks kubelet's path: the proxy's socket and containerd
// behind it.
type criReadiness struct {
	socket   string
	upstream string
	// serving is set while the proxy's Serve runs: a listening socket
	// nobody accepts on would pass the dial alone, connections queueing
	// in its backlog.
	serving atomic.Bool
	conn    *grpc.ClientConn
	runtime runtimeapi.RuntimeServiceClient
}

// newCRIReadiness does not dial: containerd may come up after startgated.
// Its own connection, not the proxy's, so that the checks' calls are not
// counted as kubelet's in startgate_cri_calls_total.
func newCRIReadiness(socket, upstream string) (*criReadiness, error) {
	conn, err := grpc.NewClient("unix://"+upstream,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		// As the proxy's: containerd coming back is seen within a second.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: criCheckTimeout,
		}))
	if err != nil {
		return nil, fmt.Errorf("daemon: containerd readiness client: %w", err)
	}
	return &criReadiness{socket: socket, upstream: upstream, conn: conn, runtime: runtimeapi.NewRuntimeServiceClient(conn)}, nil
}

func (c *criReadiness) close() { _ = c.conn.Close() }

func (c *criReadiness) socketServed(r *http.Request) error {
	if !c.serving.Load() {
		return fmt.Errorf("the CRI proxy is not serving %s", c.socket)
	}
	ctx, cancel := context.WithTimeout(r.Context(), criCheckTimeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.socket)
	if err != nil {
		// A socket file removed by hand leaves the proxy serving nobody.
		return fmt.Errorf("kubelet's endpoint cannot be reached: %w", err)
	}
	_ = conn.Close()
	return nil
}

func (c *criReadiness) containerdAnswers(r *http.Request) error {
	ctx, cancel := context.WithTimeout(r.Context(), criCheckTimeout)
	defer cancel()
	if _, err := c.runtime.Version(ctx, &runtimeapi.VersionRequest{}); err != nil {
		return fmt.Errorf("containerd on %s does not answer a CRI Version: %w", c.upstream, err)
	}
	return nil
}
