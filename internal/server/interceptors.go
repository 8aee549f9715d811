package server

import (
	"context"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The interceptor pair applies the cross-cutting steps to every RPC once:
// authorize, call, map the error to a code, log at debug.

func (s *Server) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	cred, err := s.authorize(ctx, info.FullMethod)
	var resp any
	if err == nil {
		resp, err = handler(ctx, req)
	}
	err = toStatus(err)
	s.logCall(info.FullMethod, cred, start, err)
	return resp, err
}

func (s *Server) streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	start := time.Now()
	cred, err := s.authorize(ss.Context(), info.FullMethod)
	if err == nil {
		var release func()
		if release, err = s.peers.stream(peerUID(ss.Context())); err == nil {
			err = handler(srv, ss)
			release()
		}
	}
	err = toStatus(err)
	s.logCall(info.FullMethod, cred, start, err)
	return err
}

// noCredUID counts the peers without credentials (a listener that is not
// a unix socket: tests) as one caller.
const noCredUID = ^uint32(0)

// peerUID is the caller's uid, noCredUID when it has no credentials.
func peerUID(ctx context.Context) uint32 {
	if cred, ok := peerCredFrom(ctx); ok {
		return cred.UID
	}
	return noCredUID
}

func (s *Server) authorize(ctx context.Context, method string) (PeerCred, error) {
	cred, ok := peerCredFrom(ctx)
	if !ok {
		// Only a listener that is not a unix socket gets here (New
		// installs peerCredentials): refuse what needs an identity.
		if isReadOnly(method) {
			return cred, nil
		}
		return cred, status.Errorf(codes.PermissionDenied, "server: %s needs a unix socket peer with credentials", method)
	}
	return cred, authorize(method, cred, s.adminGID, s.groups)
}

func (s *Server) logCall(method string, cred PeerCred, start time.Time, err error) {
	if ce := s.log.Check(zap.DebugLevel, "rpc"); ce != nil {
		ce.Write(
			zap.String("method", method),
			zap.Stringer("code", status.Code(err)),
			zap.Duration("took", time.Since(start)),
			zap.Int32("pid", cred.PID),
			zap.Uint32("uid", cred.UID),
			zap.Error(err),
		)
	}
}
