package server

import (
	"context"

	"go.uber.org/zap"

	"github.com/startgate/startgate/internal/admission"
	"github.com/startgate/startgate/internal/structdiff"
	pb "github.com/startgate/startgate/proto/startgate/v1"
)

// Mutating calls other than Acquire; the interceptor has checked that the
// caller is an admin.

func (s *Server) Release(ctx context.Context, req *pb.ReleaseRequest) (*pb.ReleaseResponse, error) {
	if req.LeaseId == 0 {
		return nil, invalid("lease_id", "must be set")
	}
	if err := s.gate.Release(req.LeaseId); err != nil {
		return nil, err
	}
	s.audit(ctx, "release", zap.Uint64("lease_id", req.LeaseId))
	return &pb.ReleaseResponse{}, nil
}

func (s *Server) Pause(ctx context.Context, _ *pb.PauseRequest) (*pb.PauseResponse, error) {
	s.gate.Pause()
	s.audit(ctx, "pause")
	return &pb.PauseResponse{}, nil
}

func (s *Server) Resume(ctx context.Context, _ *pb.ResumeRequest) (*pb.ResumeResponse, error) {
	s.gate.Resume()
	s.audit(ctx, "resume")
	return &pb.ResumeResponse{}, nil
}

// Drain waits under the call's own deadline: the client picks how long.
func (s *Server) Drain(ctx context.Context, _ *pb.DrainRequest) (*pb.DrainResponse, error) {
	// Logged when asked: the gate is paused from here, drained or not.
	s.audit(ctx, "drain")
	if err := s.gate.Drain(ctx); err != nil {
		return nil, err
	}
	return &pb.DrainResponse{}, nil
}

func (s *Server) SetPolicy(ctx context.Context, req *pb.SetPolicyRequest) (*pb.SetPolicyResponse, error) {
	var convErr error
	var orig admission.Policy
	p, err := s.gate.UpdatePolicy(func(p *admission.Policy) {
		// A conversion error leaves p half-updated; it is reported below
		// and the gate validates what it got, so it must not be applied:
		// restore the original.
		orig = *p
		if convErr = applyPolicy(req, p); convErr != nil {
			*p = orig
		}
	})
	if convErr != nil {
		return nil, convErr
	}
	if err != nil {
		return nil, err
	}
	s.audit(ctx, "set", zap.Strings("changed", structdiff.Fields(orig, p, "")))
	return &pb.SetPolicyResponse{Policy: policyToProto(p)}, nil
}

// SetBypass answers with the status after the change, so the caller sees
// the state it left the gate in.
func (s *Server) SetBypass(ctx context.Context, req *pb.SetBypassRequest) (*pb.StatusResponse, error) {
	s.gate.SetBypass(req.On)
	s.audit(ctx, "bypass", zap.Bool("on", req.On))
	return statusToProto(s.gate.Status(), s.gate.Cores()), nil
}
