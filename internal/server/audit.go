package server

import (
	"context"
	"fmt"
	"os"
	"reflect"
	"strconv"
	"strings"

	"go.uber.org/zap"

	"github.com/startgate/startgate/internal/admission"
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
	b, err := os.ReadFile("/proc/" + strconv.Itoa(int(pid)) + "/comm")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// policyChanges lists the fields of the policy an update changed, as
// "Field: old -> new" (nested ones as "Targets.CPU"), so the audit line
// says what was set and from what.
func policyChanges(before, after admission.Policy) []string {
	var out []string
	var walk func(prefix string, b, a reflect.Value)
	walk = func(prefix string, b, a reflect.Value) {
		for i := range b.NumField() {
			f := b.Type().Field(i)
			if !f.IsExported() {
				continue
			}
			bv, av := b.Field(i), a.Field(i)
			if bv.Kind() == reflect.Struct && bv.Type().NumField() > 0 && !bv.Type().ConvertibleTo(reflect.TypeFor[fmt.Stringer]()) {
				walk(prefix+f.Name+".", bv, av)
				continue
			}
			if bs, as := fmt.Sprint(bv.Interface()), fmt.Sprint(av.Interface()); bs != as {
				out = append(out, prefix+f.Name+": "+bs+" -> "+as)
			}
		}
	}
	walk("", reflect.ValueOf(before), reflect.ValueOf(after))
	return out
}

func (s *Server) Version(context.Context, *pb.VersionRequest) (*pb.VersionResponse, error) {
	v := version.Get()
	return &pb.VersionResponse{Version: v.Version, Revision: v.Revision, Modified: v.Modified, GoVersion: v.GoVersion}, nil
}
