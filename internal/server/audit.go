package server

import (
	"context"

	"github.com/prometheus/procfs"
	"go.uber.org/zap"

	"github.com/startgate/startgate/internal/version"
	pb "github.com/startgate/startgate/proto/startgate/v1"
)

// audit logs an operator's action at info, with who did it: the caller's
// uid and pid from the socket (SO_PEERCRED) and its command name, so the
// journal answers "who paused the gate" long after the process is gone.
// The lines carry logger "server.audit", which a log query can select on.
func (s *Server) audit(ctx context.Context, action string, fields ...zap.Field) {
	cred, ok := peerCredFrom(ctx)
	who := []zap.Field{zap.String("action", action)}
	if ok {
		who = append(who, zap.Uint32("uid", cred.UID), zap.Int32("pid", cred.PID), zap.String("command", commandOf(cred.PID)))
	}
	s.audits.Info("operator action: "+action, append(who, fields...)...)
}

// commandOf is the command name of pid (/proc/PID/comm), "" when it is
// gone or unreadable.
func commandOf(pid int32) string {
	if pid <= 0 {
		return ""
	}
	p, err := procfs.NewProc(int(pid))
	if err != nil {
		return ""
	}
	comm, err := p.Comm()
	if err != nil {
		return ""
	}
	return comm
}

func (s *Server) Version(context.Context, *pb.VersionRequest) (*pb.VersionResponse, error) {
	v := version.Get()
	return &pb.VersionResponse{Version: v.Version, Revision: v.Revision, Modified: v.Modified, GoVersion: v.GoVersion, CriUpstream: s.upstream}, nil
}
