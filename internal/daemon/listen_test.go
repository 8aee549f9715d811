package daemon

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// A client that finds the socket file finds it listening, with its final
// mode: a watcher that dials the moment the file appears is never refused
// and never sees the umask's mode. (Bound in place, the file showed up
// between bind and listen, where a connect is refused: a CI run's CRI
// client failed so.) No temporary file is left, and Close removes the
// socket.
func TestListenSocketAppearsListening(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "cri.sock")
	var seen atomic.Int64
	for round := range 100 {
		stop := make(chan struct{})
		found := make(chan error, 1)
		go func() {
			for {
				select {
				case <-stop:
					found <- nil
					return
				default:
				}
				fi, err := os.Lstat(path)
				if err != nil {
					continue
				}
				if fi.Mode().Perm() != 0o600 {
					found <- errors.New("the socket appeared with mode " + fi.Mode().Perm().String() + ", want -rw-------")
					return
				}
				c, err := net.DialTimeout("unix", path, time.Second)
				if err != nil {
					found <- err
					return
				}
				c.Close()
				seen.Add(1)
				found <- nil
				return
			}
		}()
		l, err := listenSocket(path, 0o600, -1)
		if err != nil {
			close(stop)
			t.Fatal(err)
		}
		if err := <-found; err != nil {
			t.Fatalf("round %d: a client that found the socket file: %v", round, err)
		}
		close(stop)
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("round %d: after Close the socket file is still there (%v)", round, err)
		}
		if left, _ := filepath.Glob(filepath.Join(dir, "*")); len(left) != 0 {
			t.Fatalf("round %d: files left in the socket's directory: %v", round, left)
		}
		if left, _ := filepath.Glob(filepath.Join(dir, ".*")); len(left) != 0 {
			t.Fatalf("round %d: temporary files left in the socket's directory: %v", round, left)
		}
	}
	if seen.Load() == 0 {
		t.Fatal("the watcher never dialled the socket: the test checked nothing")
	}
}

// The rename into place never replaces: a socket another daemon put at
// the path while this one started stays, and this one fails naming it.
func TestRenameNoReplace(t *testing.T) {
	dir := t.TempDir()
	old, new := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	for _, p := range []string{old, new} {
		if err := os.WriteFile(p, []byte(p), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := renameNoReplace(old, new); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("renameNoReplace onto an existing file = %v, want ErrExist", err)
	}
	if b, _ := os.ReadFile(new); string(b) != new {
		t.Fatalf("the existing file was replaced: it holds %q", b)
	}
	if err := os.Remove(new); err != nil {
		t.Fatal(err)
	}
	if err := renameNoReplace(old, new); err != nil {
		t.Fatalf("renameNoReplace to a free name = %v", err)
	}
}
