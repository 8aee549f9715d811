package healthz

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestHandlers(t *testing.T) {
	var containerdErr error
	checks := []Check{
		Ping,
		{Name: "admission", Func: func(*http.Request) error {
			return Warning(errors.New("bypassed by an operator"))
		}},
		{Name: "containerd", Func: func(*http.Request) error { return containerdErr }},
	}
	mux := http.NewServeMux()
	Install(mux, "/readyz", nil, checks...)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	tests := []struct {
		name string
		down error // containerd's answer
		path string
		code int
		body string
	}{
		{"healthy", nil, "/readyz", 200, "ok"},
		{"healthy verbose", nil, "/readyz?verbose", 200,
			"[+]ping ok\n[+]admission ok\n[+]containerd ok\nwarn: admission: bypassed by an operator\nreadyz check passed\n"},
		{"one failing is verbose without asking", errors.New("connection refused"), "/readyz", 500,
			"[+]ping ok\n[+]admission ok\n[-]containerd failed: connection refused\nwarn: admission: bypassed by an operator\nreadyz check failed\n"},
		{"the failing one excluded", errors.New("connection refused"), "/readyz?exclude=containerd", 200, "ok"},
		{"excluded, verbose, and an unknown name", errors.New("connection refused"), "/readyz?verbose&exclude=containerd&exclude=etcd", 200,
			"[+]ping ok\n[+]admission ok\n[+]containerd excluded: ok\nwarn: admission: bypassed by an operator\n" +
				"warn: some health checks cannot be excluded: no matches for [\"etcd\"]\nreadyz check passed\n"},
		{"one check, failing", errors.New("connection refused"), "/readyz/containerd", 500, "internal server error: connection refused\n"},
		{"one check, passing", nil, "/readyz/containerd", 200, "ok"},
		{"one check with a warning passes", nil, "/readyz/admission", 200, "ok"},
		{"another failing does not fail this one", errors.New("connection refused"), "/readyz/ping", 200, "ok"},
	}
	for _, tt := range tests {
		containerdErr = tt.down
		resp, err := http.Get(srv.URL + tt.path)
		if err != nil {
			t.Fatalf("%s: GET %s: %v", tt.name, tt.path, err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != tt.code || string(b) != tt.body {
			t.Errorf("%s: GET %s = %d %q, want %d %q", tt.name, tt.path, resp.StatusCode, b, tt.code, tt.body)
		}
		if got := resp.Header.Get("Content-Type"); got != "text/plain; charset=utf-8" {
			t.Errorf("%s: Content-Type %q, want text/plain; charset=utf-8", tt.name, got)
		}
	}
}
