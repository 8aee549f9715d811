package server

import (
	"context"
	"strings"

	"github.com/distribution/reference"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/startgate/startgate/internal/prefetch"
	pb "github.com/startgate/startgate/proto/startgate/v1"
)

// Prefetcher is what the prefetch RPCs need of prefetch.Manager.
type Prefetcher interface {
	Add(ref string) error
	Remove(ref string) error
	List() []prefetch.Entry
}

// prefetchSubscriber is the Prefetcher's optional event feed, merged
// into Watch.
type prefetchSubscriber interface {
	Subscribe(buffer int) (<-chan prefetch.Event, func())
}

var (
	_ Prefetcher         = (*prefetch.Manager)(nil)
	_ prefetchSubscriber = (*prefetch.Manager)(nil)
)

// errPrefetchOff answers every prefetch call when Config.Prefetch is nil.
var errPrefetchOff = status.Error(codes.FailedPrecondition, "server: prefetch is off (prefetch.enabled in the config)")

// maxReferenceLen bounds a reference before it is parsed; distribution's
// own limit on a name is 255, a tag 128.
const maxReferenceLen = 512

// checkTagRef refuses what the Manager would refuse, with the field
// named: an empty, malformed or digest reference.
func checkTagRef(ref string) error {
	if ref == "" {
		return invalid("reference", "must be set")
	}
	if len(ref) > maxReferenceLen {
		return invalid("reference", "%d bytes, longer than %d", len(ref), maxReferenceLen)
	}
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return invalid("reference", "%q: %v", ref, err)
	}
	if _, ok := named.(reference.Canonical); ok {
		return invalid("reference", "%q: want a tag, not a digest (a digest never changes)", ref)
	}
	return nil
}

// PrefetchAdd and PrefetchRemove are mutating: the interceptor has checked
// that the caller is an admin.

func (s *Server) PrefetchAdd(ctx context.Context, req *pb.PrefetchAddRequest) (*pb.PrefetchAddResponse, error) {
	if s.prefetch == nil {
		return nil, errPrefetchOff
	}
	ref := strings.TrimSpace(req.Reference)
	if err := checkTagRef(ref); err != nil {
		return nil, err
	}
	if err := s.prefetch.Add(ref); err != nil {
		return nil, err
	}
	s.audit(ctx, "prefetch add", zap.String("ref", ref))
	return &pb.PrefetchAddResponse{}, nil
}

func (s *Server) PrefetchRemove(ctx context.Context, req *pb.PrefetchRemoveRequest) (*pb.PrefetchRemoveResponse, error) {
	if s.prefetch == nil {
		return nil, errPrefetchOff
	}
	ref := strings.TrimSpace(req.Reference)
	if err := checkTagRef(ref); err != nil {
		return nil, err
	}
	if err := s.prefetch.Remove(ref); err != nil {
		return nil, err
	}
	s.audit(ctx, "prefetch rm", zap.String("ref", ref))
	return &pb.PrefetchRemoveResponse{}, nil
}

func (s *Server) PrefetchList(context.Context, *pb.PrefetchListRequest) (*pb.PrefetchListResponse, error) {
	if s.prefetch == nil {
		return nil, errPrefetchOff
	}
	es := s.prefetch.List()
	out := &pb.PrefetchListResponse{Entries: make([]*pb.PrefetchEntry, len(es))}
	for i, e := range es {
		out.Entries[i] = prefetchEntryToProto(e)
	}
	return out, nil
}

func prefetchEntryToProto(e prefetch.Entry) *pb.PrefetchEntry {
	return &pb.PrefetchEntry{
		Reference:      e.Ref,
		RunningDigest:  e.Running,
		NewDigest:      e.New,
		State:          string(e.State),
		BytesDone:      e.BytesDone,
		BytesTotal:     e.BytesTotal,
		LayersFetched:  int32(e.LayersFetched),
		Error:          e.Error,
		Updated:        ts(e.Updated),
		FetchedLayers:  e.FetchedLayers,
		ConfigDigest:   e.Config,
		Lease:          e.Lease,
		Expires:        ts(e.Expires),
		PreviousDigest: e.Previous,
		PreviousUntil:  ts(e.PreviousUntil),
		Hits:           int32(e.Hits),
	}
}

// prefetchEventToProto is a prefetch event as Watch sends it: type
// prefetch, the kind as its reason, the entry after the change. A lost
// count is the gate's "lost" event type, as for its own losses.
func prefetchEventToProto(e prefetch.Event) *pb.Event {
	if e.Kind == prefetch.EventLost {
		return &pb.Event{Seq: e.Seq, Time: ts(e.Time), Type: pb.EventType_EVENT_TYPE_LOST, TypeName: "lost", Reason: "prefetch", Lost: e.Lost}
	}
	return &pb.Event{
		Seq: e.Seq, Time: ts(e.Time),
		Type: pb.EventType_EVENT_TYPE_PREFETCH, TypeName: "prefetch",
		Reason:   string(e.Kind),
		Prefetch: prefetchEntryToProto(e.Entry),
	}
}
