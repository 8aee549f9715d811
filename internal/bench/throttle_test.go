package bench

import (
	"bytes"
	"crypto/rand"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestThrottledProxy: a body larger than the bucket's burst comes through
// whole and unchanged, request bodies go the other way, and Close ends
// every goroutine (goleak in TestMain). Speed is not asserted.
func TestThrottledProxy(t *testing.T) {
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
	p, err := startThrottledProxy(strings.TrimPrefix(srv.URL, "http://"), 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{}
	client := &http.Client{Transport: tr}
	resp, err := client.Get("http://" + p.Host() + "/blob")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || !bytes.Equal(got, body) {
		t.Errorf("GET through the proxy: got %d bytes (%v), want the %d bytes served", len(got), err, len(body))
	}
	resp, err = client.Post("http://"+p.Host()+"/echo", "application/octet-stream", strings.NewReader("hello"))
	if err != nil {
		t.Fatal(err)
	}
	got, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(got) != "hello" {
		t.Errorf("POST through the proxy: got %q, want the body echoed", got)
	}
	tr.CloseIdleConnections()
	if err := p.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if _, err := client.Get("http://" + p.Host() + "/blob"); err == nil {
		t.Errorf("GET after Close: got no error, want the port closed")
	}
}

func TestThrottledProxyRefusesZeroRate(t *testing.T) {
	if _, err := startThrottledProxy("127.0.0.1:1", 0); err == nil {
		t.Errorf("startThrottledProxy(rate 0): got no error, want one")
	}
}
