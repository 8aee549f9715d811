package testbed

import (
	"bytes"
	"crypto/rand"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestLink: a body larger than the bucket's burst and the chunk queue
// comes through whole, request bodies go the other way, a new connection
// costs at least two round trips to its first answer and a kept one at
// least one (the delay is a floor: a busy machine only adds to it), and
// Close ends every goroutine (goleak in TestMain).
func TestLink(t *testing.T) {
	body := make([]byte, 300<<10)
	_, _ = rand.Read(body)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			_, _ = io.Copy(w, r.Body)
			return
		}
		_, _ = w.Write(body)
	}))
	defer srv.Close()
	const rtt = 40 * time.Millisecond
	l, err := NewLink(LinkOptions{Bandwidth: 64 << 20, RTT: rtt})
	if err != nil {
		t.Fatal(err)
	}
	host, err := l.Forward(strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{}
	client := &http.Client{Transport: tr}
	get := func(wantAtLeast time.Duration) {
		t.Helper()
		t0 := time.Now()
		resp, err := client.Get("http://" + host + "/blob")
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		took := time.Since(t0)
		if err != nil || !bytes.Equal(got, body) {
			t.Errorf("GET through the link: got %d bytes (%v), want the %d bytes served", len(got), err, len(body))
		}
		if took < wantAtLeast {
			t.Errorf("GET through a link with RTT %s took %s, want at least %s", rtt, took, wantAtLeast)
		}
	}
	get(2 * rtt) // handshake + request
	get(rtt)     // the same connection, kept alive
	resp, err := client.Post("http://"+host+"/echo", "application/octet-stream", strings.NewReader("hello"))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(got) != "hello" {
		t.Errorf("POST through the link: got %q, want the body echoed", got)
	}
	tr.CloseIdleConnections()
	if err := l.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if _, err := client.Get("http://" + host + "/blob"); err == nil {
		t.Errorf("GET after Close: got no error, want the port closed")
	}
	if _, err := l.Forward("127.0.0.1:1"); err == nil {
		t.Errorf("Forward after Close: got no error, want one")
	}
}

func TestLinkRefusesNegative(t *testing.T) {
	for _, o := range []LinkOptions{{Bandwidth: -1}, {RTT: -time.Millisecond}} {
		if _, err := NewLink(o); err == nil {
			t.Errorf("NewLink(%+v): got no error, want one", o)
		}
	}
}
