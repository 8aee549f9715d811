package server

import (
	"os"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/startgate/startgate/internal/admission"
	"github.com/startgate/startgate/internal/structdiff"
	"github.com/startgate/startgate/internal/version"
	pb "github.com/startgate/startgate/proto/startgate/v1"
)

// TestOperatorActionsAreLogged: every mutating call an operator makes is
// one info line on the server.audit logger naming the action, the
// caller's uid, pid and command, and the change; a call that fails
// changes nothing and logs no action (drain aside: it pauses the gate
// whether or not it drains in time).
func TestOperatorActionsAreLogged(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	h := newHarness(t, false, nil, func(c *Config) { c.Logger = zap.New(core) })
	ctx := ctxT(t)
	if _, err := h.client.Pause(ctx, &pb.PauseRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.client.Resume(ctx, &pb.ResumeRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.client.SetBypass(ctx, &pb.SetBypassRequest{On: true}); err != nil {
		t.Fatal(err)
	}
	in := int32(3)
	if _, err := h.client.SetPolicy(ctx, &pb.SetPolicyRequest{InFlight: &in}); err != nil {
		t.Fatal(err)
	}
	bad := int32(-5)
	if _, err := h.client.SetPolicy(ctx, &pb.SetPolicyRequest{InFlight: &bad}); err == nil {
		t.Fatal("SetPolicy with fixed in-flight -5 succeeded")
	}
	if _, err := h.client.Release(ctx, &pb.ReleaseRequest{LeaseId: 999}); err == nil {
		t.Fatal("Release of a lease nobody holds succeeded")
	}

	var got []string
	for _, e := range logs.All() {
		if e.LoggerName != "audit" {
			continue
		}
		if e.Level != zapcore.InfoLevel {
			t.Errorf("%q logged at %v, want info", e.Message, e.Level)
		}
		f := e.ContextMap()
		if f["uid"] != uint32(os.Getuid()) || f["pid"] != int32(os.Getpid()) || f["command"] == "" {
			t.Errorf("%q: uid %v pid %v command %q, want this process's (uid %d, pid %d)", e.Message, f["uid"], f["pid"], f["command"], os.Getuid(), os.Getpid())
		}
		line := f["action"].(string)
		switch line {
		case "bypass":
			if f["on"] != true {
				t.Errorf("bypass line without on=true: %v", f)
			}
		case "set":
			ch, _ := f["changed"].([]any)
			if len(ch) != 1 || !strings.HasPrefix(ch[0].(string), "FixedInFlight: 0 -> 3") {
				t.Errorf("set line changed = %v, want [FixedInFlight: 0 -> 3]", f["changed"])
			}
		}
		got = append(got, line)
	}
	if want := []string{"pause", "resume", "bypass", "set"}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("audit lines %v, want %v (failed calls log none)", got, want)
	}
}

func TestPolicyChanges(t *testing.T) {
	a := admission.DefaultPolicy()
	b := a
	b.FixedInFlight = 4
	b.Targets[0] = a.Targets[0] / 2
	b.Aging = 2 * a.Aging
	got := structdiff.Fields(a, b, "")
	if len(got) != 3 {
		t.Fatalf("structdiff.Fields = %v, want 3 changes", got)
	}
	if c := structdiff.Fields(a, a, ""); len(c) != 0 {
		t.Errorf("structdiff.Fields of a policy and itself = %v, want none", c)
	}
}

func TestVersionRPC(t *testing.T) {
	h := newHarness(t, false, nil)
	v, err := h.client.Version(ctxT(t), &pb.VersionRequest{})
	if err != nil {
		t.Fatal(err)
	}
	want := version.Get()
	if v.Version != want.Version || v.GoVersion != want.GoVersion || v.Revision != want.Revision {
		t.Errorf("Version = %v, want %+v", v, want)
	}
}
