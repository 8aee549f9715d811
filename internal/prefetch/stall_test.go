package prefetch

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestStallTransport: a body that trickles is cut with ErrStalled naming
// the host; a body that flows is read whole; a reader that pauses on its
// own side (a bandwidth cap, an IO pause) longer than the window is not
// taken for a stall.
func TestStallTransport(t *testing.T) {
	const window = 200 * time.Millisecond
	big := bytes.Repeat([]byte("x"), 256<<10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/trickle":
			w.WriteHeader(http.StatusOK)
			for i := 0; i < 100; i++ {
				if _, err := w.Write([]byte("0123456789")); err != nil {
					return
				}
				w.(http.Flusher).Flush()
				select {
				case <-r.Context().Done():
					return
				case <-time.After(50 * time.Millisecond):
				}
			}
		default:
			_, _ = w.Write(big)
		}
	}))
	defer srv.Close()
	tr := http.DefaultTransport.(*http.Transport).Clone()
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: stallTransport{rt: tr, window: window, floor: 32 << 10}}

	resp, err := client.Get(srv.URL + "/trickle")
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	if !errors.Is(err, ErrStalled) || !strings.Contains(err.Error(), host) {
		t.Fatalf("reading a trickle: %v, want ErrStalled naming %s", err, host)
	}

	resp, err = client.Get(srv.URL + "/flow")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || len(got) != len(big) {
		t.Fatalf("reading a flowing body: %d bytes, %v; want %d", len(got), err, len(big))
	}

	resp, err = client.Get(srv.URL + "/flow")
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64<<10)
	total := 0
	for {
		n, err := resp.Body.Read(buf)
		total += n
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("a reader pausing on its own side got %v after %d bytes", err, total)
		}
		time.Sleep(3 * window) // the reader's own wait, not the registry's
	}
	resp.Body.Close()
	if total != len(big) {
		t.Fatalf("read %d bytes, want %d", total, len(big))
	}
}
