package version

import (
	"runtime"
	"strings"
	"testing"
)

func TestGet(t *testing.T) {
	i := Get()
	if i.Version != Version || i.GoVersion != runtime.Version() {
		t.Errorf("Get() = %+v, want version %q and Go %q", i, Version, runtime.Version())
	}
}

func TestString(t *testing.T) {
	for _, tc := range []struct {
		i    Info
		want string
	}{
		{Info{Version: "v1.2.3", Revision: "0123456789abcdef0123", GoVersion: "go1.26.8"}, "v1.2.3 (0123456789ab, go1.26.8)"},
		{Info{Version: "dev", Revision: "abc", Modified: true, GoVersion: "go1.26.8"}, "dev (abc, modified, go1.26.8)"},
		{Info{Version: "dev", GoVersion: "go1.26.8"}, "dev (no revision, go1.26.8)"},
	} {
		if got := tc.i.String(); got != tc.want {
			t.Errorf("%+v.String() = %q, want %q", tc.i, got, tc.want)
		}
	}
	if !strings.Contains(Get().String(), runtime.Version()) {
		t.Errorf("Get().String() = %q, want the Go version in it", Get().String())
	}
}
