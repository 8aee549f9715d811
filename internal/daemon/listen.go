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

// apiListener is a unix socket the daemon serves on: the API's or the CRI
// proxy's.
type apiListener struct {
	net.Listener
	// activated: systemd owns the socket file; leave it alone on exit.
	activated bool
	path      string
}

// criFDName is the FileDescriptorName= of a socket-activated CRI socket.
const criFDName = "cri"

// activated are the sockets systemd passed in; either may be nil.
type activated struct {
	api, cri *apiListener
}

// activatedListeners sorts the unix listeners systemd passed in by name:
// the first named "cri" (FileDescriptorName=cri) is the CRI proxy's, the
// first of any other name the API's. Other passed fds are closed:
// startgated has no use for them and holding them would keep their
// sockets looking alive.
//
// activation.Files rather than ListenersWithNames: the latter drops fds
// that are not listeners without closing them, and loses the count the
// error below reports.
func activatedListeners() (activated, error) {
	var out activated
	files := activation.Files(true)
	for _, f := range files {
		l, err := net.FileListener(f)
		// FileListener dups the fd; the original is not needed either way.
		f.Close()
		if err != nil {
			continue
		}
		ul, ok := l.(*net.UnixListener)
		slot := &out.api
		if f.Name() == criFDName {
			slot = &out.cri
		}
		if !ok || *slot != nil {
			l.Close()
			continue
		}
		// systemd removes the file when the socket unit stops.
		ul.SetUnlinkOnClose(false)
		*slot = &apiListener{Listener: ul, activated: true, path: ul.Addr().String()}
	}
	if out.api == nil && out.cri == nil && len(files) > 0 {
		return activated{}, fmt.Errorf("daemon: socket activation passed %d fds but no unix stream socket", len(files))
	}
	return out, nil
}

// listenSocket creates a socket at path with the given mode and group (-1
// keeps the daemon's). A socket file left by a daemon that died is
// removed; one a live daemon answers on is not, and the start fails: two
// daemons gating one node would each admit up to the full limit.
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
	if gid < 0 {
		return &apiListener{Listener: l, path: path}, nil
	}
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
