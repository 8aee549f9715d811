package daemon

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
)

// apiListener is the socket the API is served on.
type apiListener struct {
	net.Listener
	// activated: systemd owns the socket file; leave it alone on exit.
	activated bool
	path      string
}

// activatedListener returns the first unix listener systemd passed in, or
// nil when the daemon was not socket-activated. Other passed listeners are
// closed: startgated has no use for them and holding them would keep
// their sockets looking alive.
func activatedListener() (*apiListener, error) {
	ls, err := activation.Listeners()
	if err != nil {
		return nil, fmt.Errorf("daemon: socket activation: %w", err)
	}
	var out *apiListener
	for _, l := range ls {
		if l == nil {
			continue
		}
		if ul, ok := l.(*net.UnixListener); ok && out == nil {
			// systemd removes the file when the socket unit stops.
			ul.SetUnlinkOnClose(false)
			out = &apiListener{Listener: ul, activated: true, path: ul.Addr().String()}
			continue
		}
		l.Close()
	}
	if out == nil && len(ls) > 0 {
		return nil, fmt.Errorf("daemon: socket activation passed %d fds but no unix stream socket", len(ls))
	}
	return out, nil
}

// listenSocket creates the API socket at path with the given mode and
// group. A socket file left by a daemon that died is removed; one a live
// daemon answers on is not, and the start fails: two daemons gating one
// node would each admit up to the full limit.
func listenSocket(path string, mode fs.FileMode, gid int) (*apiListener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("daemon: socket directory: %w", err)
	}
	if err := removeStale(path); err != nil {
		return nil, err
	}
	// Until the chmod below the socket has the umask's mode, which for a
	// daemon's usual 022 denies connect to everyone but the owner: the
	// window is closed, not open.
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("daemon: listen: %w", err)
	}
	l.SetUnlinkOnClose(true)
	if err := os.Chmod(path, mode); err != nil {
		l.Close()
		return nil, fmt.Errorf("daemon: socket mode: %w", err)
	}
	// The owner stays the daemon's user (root under systemd); only the
	// group changes, which also works for an unprivileged daemon whose
	// own group it is.
	if err := os.Chown(path, -1, gid); err != nil {
		l.Close()
		return nil, fmt.Errorf("daemon: socket group %d: %w", gid, err)
	}
	return &apiListener{Listener: l, path: path}, nil
}

func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("daemon: socket: %w", err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("daemon: %s exists and is not a socket; refusing to replace it", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("daemon: another process is serving on %s (is startgated already running?)", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("daemon: remove stale socket: %w", err)
	}
	return nil
}
