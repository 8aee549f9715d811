package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/startgate/startgate/internal/admission"
	"github.com/startgate/startgate/internal/prefetch"
	pb "github.com/startgate/startgate/proto/startgate/v1"
)

// fakePrefetcher records what the server hands it.
type fakePrefetcher struct {
	mu      sync.Mutex
	added   []string
	removed []string
	entries []prefetch.Entry
	err     error // returned by Add and Remove when set
}

func (f *fakePrefetcher) Add(ref string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	f.added = append(f.added, ref)
	return nil
}

func (f *fakePrefetcher) Remove(ref string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	f.removed = append(f.removed, ref)
	return nil
}

func (f *fakePrefetcher) List() []prefetch.Entry {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]prefetch.Entry(nil), f.entries...)
}

// prefetchClient serves a real gate and p (nil: prefetch off) on a real
// unix socket.
func prefetchClient(t *testing.T, p Prefetcher) pb.StartgateClient {
	t.Helper()
	g, err := admission.New(admission.Config{Policy: admission.DefaultPolicy(), Cores: 2})
	if err != nil {
		t.Fatalf("admission.New: %v", err)
	}
	srv, err := New(Config{Gate: g, Logger: zap.NewNop(), AdminGID: -1, Prefetch: p})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	sock := filepath.Join(t.TempDir(), "sg.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc.NewClient: %v", err)
	}
	t.Cleanup(func() {
		conn.Close()
		g.Close()
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		srv.Stop(ctx)
		<-served
	})
	return pb.NewStartgateClient(conn)
}

const (
	dgstRun = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	dgstNew = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
)

func TestPrefetchList(t *testing.T) {
	upd := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	f := &fakePrefetcher{entries: []prefetch.Entry{
		{Ref: "docker.io/library/app:1", Running: dgstRun, New: dgstNew, State: prefetch.StateFetching,
			BytesDone: 10, BytesTotal: 20, LayersFetched: 1, Updated: upd},
		{Ref: "example.com/b:2", State: prefetch.StateFailed, Error: "resolve: 500"},
	}}
	c := prefetchClient(t, f)
	r, err := c.PrefetchList(ctxT(t), &pb.PrefetchListRequest{})
	if err != nil {
		t.Fatalf("PrefetchList: %v", err)
	}
	if len(r.Entries) != 2 {
		t.Fatalf("PrefetchList: %d entries, want 2", len(r.Entries))
	}
	e := r.Entries[0]
	if e.Reference != "docker.io/library/app:1" || e.RunningDigest != dgstRun || e.NewDigest != dgstNew ||
		e.State != "fetching" || e.BytesDone != 10 || e.BytesTotal != 20 || e.LayersFetched != 1 ||
		!e.Updated.AsTime().Equal(upd) {
		t.Errorf("entry 0 = %v", e)
	}
	if e := r.Entries[1]; e.State != "failed" || e.Error != "resolve: 500" || e.Updated != nil {
		t.Errorf("entry 1 = %v, want failed with its error and no updated", e)
	}
}

func TestPrefetchAddRemove(t *testing.T) {
	f := &fakePrefetcher{}
	c := prefetchClient(t, f)
	ctx := ctxT(t)
	if _, err := c.PrefetchAdd(ctx, &pb.PrefetchAddRequest{Reference: " app:1 "}); err != nil {
		t.Fatalf("PrefetchAdd: %v", err)
	}
	if _, err := c.PrefetchRemove(ctx, &pb.PrefetchRemoveRequest{Reference: "example.com/x/y:2"}); err != nil {
		t.Fatalf("PrefetchRemove: %v", err)
	}
	f.mu.Lock()
	added, removed := f.added, f.removed
	f.mu.Unlock()
	if len(added) != 1 || added[0] != "app:1" || len(removed) != 1 || removed[0] != "example.com/x/y:2" {
		t.Errorf("added %q, removed %q; want [app:1], [example.com/x/y:2]", added, removed)
	}
}

func TestPrefetchInvalidReference(t *testing.T) {
	f := &fakePrefetcher{}
	c := prefetchClient(t, f)
	ctx := ctxT(t)
	for _, tc := range []struct {
		ref, want string
	}{
		{"", "must be set"},
		{"Bad:Ref", "reference"},
		{"app@" + dgstNew, "a tag, not a digest"},
		{"app:1@" + dgstNew, "a tag, not a digest"},
		{strings.Repeat("a", 600), "longer than"},
	} {
		for name, call := range map[string]func() error{
			"add": func() error { _, err := c.PrefetchAdd(ctx, &pb.PrefetchAddRequest{Reference: tc.ref}); return err },
			"remove": func() error {
				_, err := c.PrefetchRemove(ctx, &pb.PrefetchRemoveRequest{Reference: tc.ref})
				return err
			},
		} {
			err := call()
			msg := status.Convert(err).Message()
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(msg, "invalid reference") || !strings.Contains(msg, tc.want) {
				t.Errorf("%s %.40q = %v; want InvalidArgument naming reference and saying %q", name, tc.ref, err, tc.want)
			}
		}
	}
	if len(f.added)+len(f.removed) != 0 {
		t.Errorf("the Prefetcher was called for invalid references: added %q, removed %q", f.added, f.removed)
	}
}

func TestPrefetchErrorsMapped(t *testing.T) {
	f := &fakePrefetcher{err: fmt.Errorf("%w: %q", prefetch.ErrNotTag, "app:1")}
	c := prefetchClient(t, f)
	_, err := c.PrefetchAdd(ctxT(t), &pb.PrefetchAddRequest{Reference: "app:1"})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("Add failing with ErrNotTag = %v, want InvalidArgument", err)
	}
	f.mu.Lock()
	f.err = errors.New("boom")
	f.mu.Unlock()
	_, err = c.PrefetchRemove(ctxT(t), &pb.PrefetchRemoveRequest{Reference: "app:1"})
	if status.Code(err) != codes.Internal || !strings.Contains(status.Convert(err).Message(), "boom") {
		t.Errorf("Remove failing with boom = %v, want Internal boom", err)
	}
}

func TestPrefetchOff(t *testing.T) {
	for name, p := range map[string]Prefetcher{"nil": nil, "nil manager": (*prefetch.Manager)(nil)} {
		t.Run(name, func(t *testing.T) {
			c := prefetchClient(t, p)
			ctx := ctxT(t)
			for call, err := range map[string]error{
				"add":    second(c.PrefetchAdd(ctx, &pb.PrefetchAddRequest{Reference: "app:1"})),
				"remove": second(c.PrefetchRemove(ctx, &pb.PrefetchRemoveRequest{Reference: "app:1"})),
				"list":   second(c.PrefetchList(ctx, &pb.PrefetchListRequest{})),
			} {
				if status.Code(err) != codes.FailedPrecondition ||
					status.Convert(err).Message() != "server: prefetch is off (prefetch.enabled in the config)" {
					t.Errorf("%s with prefetch off = %v, want FailedPrecondition prefetch is off", call, err)
				}
			}
		})
	}
}

func second[T any](_ T, err error) error { return err }

// TestReadOnlyMethodsExist keeps the read-only list in step with the
// service: a misspelt name there would make a read need an admin.
func TestReadOnlyMethodsExist(t *testing.T) {
	methods := map[string]bool{}
	for _, m := range pb.Startgate_ServiceDesc.Methods {
		methods["/"+pb.Startgate_ServiceDesc.ServiceName+"/"+m.MethodName] = true
	}
	for _, m := range pb.Startgate_ServiceDesc.Streams {
		methods["/"+pb.Startgate_ServiceDesc.ServiceName+"/"+m.StreamName] = true
	}
	for m := range readOnly {
		if !methods[m] {
			t.Errorf("read-only method %s is not in the service", m)
		}
	}
	for _, m := range []string{"PrefetchAdd", "PrefetchRemove"} {
		if isReadOnly("/startgate.v1.Startgate/" + m) {
			t.Errorf("%s is read-only, want admin only", m)
		}
	}
}

// subscribingPrefetcher also feeds events, as *prefetch.Manager does.
type subscribingPrefetcher struct {
	fakePrefetcher
	events chan prefetch.Event
	subbed chan struct{}
}

func (f *subscribingPrefetcher) Subscribe(int) (<-chan prefetch.Event, func()) {
	close(f.subbed)
	return f.events, func() {}
}

// Watch merges the prefetch manager's events into the gate's, and goes
// on with the gate's when the manager's channel closes.
func TestWatchPrefetchEvents(t *testing.T) {
	f := &subscribingPrefetcher{events: make(chan prefetch.Event, 4), subbed: make(chan struct{})}
	c := prefetchClient(t, f)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w, err := c.Watch(ctx, &pb.WatchRequest{})
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	if _, err := w.Header(); err != nil {
		t.Fatalf("Header: %v", err)
	}
	<-f.subbed
	at := time.Now()
	f.events <- prefetch.Event{Seq: 1, Time: at, Kind: prefetch.EventState, Entry: prefetch.Entry{
		Ref: "localhost:5000/app:1", New: "sha256:" + strings.Repeat("a", 64), State: prefetch.StateFetching,
		BytesDone: 5, BytesTotal: 10, FetchedLayers: []string{"sha256:" + strings.Repeat("b", 64)},
	}}
	f.events <- prefetch.Event{Seq: 2, Time: at, Kind: prefetch.EventLost, Lost: 3}
	e, err := w.Recv()
	if err != nil {
		t.Fatalf("Recv: %v", err)
	}
	p := e.GetPrefetch()
	if e.Type != pb.EventType_EVENT_TYPE_PREFETCH || e.TypeName != "prefetch" || e.Reason != "state" ||
		p.GetReference() != "localhost:5000/app:1" || p.GetState() != "fetching" || p.GetBytesDone() != 5 || len(p.GetFetchedLayers()) != 1 {
		t.Fatalf("prefetch event = %v", e)
	}
	if e, err = w.Recv(); err != nil || e.Type != pb.EventType_EVENT_TYPE_LOST || e.Lost != 3 || e.Reason != "prefetch" {
		t.Fatalf("lost event = %v, %v; want EVENT_TYPE_LOST lost 3 reason prefetch", e, err)
	}
	close(f.events)
	// The gate's events still come after the manager's channel closed.
	if _, err := c.Pause(ctx, &pb.PauseRequest{}); err != nil {
		t.Fatalf("Pause: %v", err)
	}
	if e, err = w.Recv(); err != nil || e.Type != pb.EventType_EVENT_TYPE_PAUSED {
		t.Fatalf("after the prefetch feed closed: %v, %v; want the paused event", e, err)
	}
}
