package server

import (
	"context"
	"errors"
	"net"
	"runtime"
	"sync"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/startgate/startgate/internal/admission"
	"github.com/startgate/startgate/internal/prefetch"
	startgatev1 "github.com/startgate/startgate/proto/startgate/v1"
)

// Config wires a Server.
type Config struct {
	Gate   *admission.Gate
	Logger *zap.Logger
	// AdminGID is the group allowed to call mutating RPCs besides root;
	// -1 means root only.
	AdminGID int
	// Prefetch serves the prefetch RPCs (a *prefetch.Manager); nil means
	// prefetch is off and they answer FailedPrecondition.
	Prefetch Prefetcher
	// Limits caps each caller's connections, streams and waiters.
	Limits Limits
	// CRIUpstream is the runtime socket the CRI proxy forwards to,
	// reported by Version.
	CRIUpstream string
}

// Server serves the startgate API for one gate.
type Server struct {
	startgatev1.UnimplementedStartgateServer

	gate     *admission.Gate
	log      *zap.Logger
	audits   *zap.Logger // operator actions (audit.go)
	adminGID int
	prefetch Prefetcher
	upstream string
	groups   groupsFunc
	peers    *peers
	grpc     *grpc.Server
	health   *health.Server

	stopOnce sync.Once
	// stopping is closed by Stop so that Watch streams end and graceful
	// stop does not wait for watchers.
	stopping chan struct{}
}

// New builds a server; Serve starts it.
func New(cfg Config) (*Server, error) {
	if cfg.Gate == nil {
		return nil, errors.New("server: no gate")
	}
	if m, ok := cfg.Prefetch.(*prefetch.Manager); ok && m == nil {
		// A nil *Manager in the interface is prefetch off too, not a
		// Prefetcher to call.
		cfg.Prefetch = nil
	}
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	s := &Server{
		gate:     cfg.Gate,
		log:      log,
		audits:   log.Named("audit"),
		adminGID: cfg.AdminGID,
		prefetch: cfg.Prefetch,
		upstream: cfg.CRIUpstream,
		groups:   procGroups,
		peers:    newPeers(cfg.Limits, log.Named("memory")),
		health:   health.NewServer(),
		stopping: make(chan struct{}),
	}
	s.grpc = grpc.NewServer(
		grpc.Creds(peerCredentials{peers: s.peers}),
		// A pool of stream workers saves a goroutine start per call, and
		// a shared write buffer an allocation per connection write: about
		// 10µs of the ~140µs uncontended Acquire round trip
		// (BenchmarkAcquireReleaseUnixSocket). Long-lived streams do not
		// starve the pool: gRPC starts a goroutine when no worker is free.
		grpc.NumStreamWorkers(uint32(runtime.NumCPU())),
		grpc.SharedWriteBuffer(true),
		grpc.UnaryInterceptor(s.unaryInterceptor),
		grpc.StreamInterceptor(s.streamInterceptor),
	)
	startgatev1.RegisterStartgateServer(s.grpc, s)
	healthpb.RegisterHealthServer(s.grpc, s.health)
	reflection.Register(s.grpc)
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.health.SetServingStatus(startgatev1.Startgate_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	return s, nil
}

// Serve accepts connections on lis until Stop; it returns nil after Stop.
func (s *Server) Serve(lis net.Listener) error {
	return s.grpc.Serve(lis)
}

// Stop reports NOT_SERVING, ends Watch streams and stops gracefully,
// cutting the remaining calls (Acquire streams holding slots) when ctx
// ends.
func (s *Server) Stop(ctx context.Context) {
	s.stopOnce.Do(func() {
		s.health.Shutdown()
		close(s.stopping)
	})
	done := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		s.grpc.Stop()
		<-done
	}
}
