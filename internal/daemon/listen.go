package daemon

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"golang.org/x/sys/unix"
)

// apiListener is a unix socket the daemon serves on: the API's or the CRI
// proxy's.
type apiListener struct {
	net.Listener
	// activated: systemd owns the socket file; leave it alone on exit.
	activated bool
	path      string
	// unlink removes path once, at the first Close (grpc.Server's Stop
	// and the daemon's deferred Close both close it).
	unlink sync.Once
}

// Close closes the listener and, for a socket the daemon created,
// removes its file.
func (l *apiListener) Close() error {
	err := l.Listener.Close()
	if !l.activated {
		l.unlink.Do(func() { _ = os.Remove(l.path) })
	}
	return err
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
	// The socket is bound, made listening and given its mode and group
	// under a temporary name, then renamed into place: a client that
	// finds the file (kubelet at boot, a test waiting for it) always
	// finds it listening with its final mode. Bound at path itself there
	// would be a window between bind and listen in which a connect is
	// refused, and one before the chmod with the umask's mode.
	//
	// The temporary name is the process's own, so two daemons started on
	// one path at once never share it, and the rename does not replace:
	// the second finds the first's socket in place and fails, as it
	// does when it finds it at removeStale.
	tmp := filepath.Join(filepath.Dir(path), fmt.Sprintf(".%s.%d~", filepath.Base(path), os.Getpid()))
	if len(tmp) >= maxSocketPath {
		// The temporary name would not fit in sun_path where the real
		// one does: bind in place and accept the window.
		tmp = path
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("daemon: listen: %w", err)
	}
	// apiListener.Close removes the file by its final name.
	l.SetUnlinkOnClose(false)
	fail := func(err error) (*apiListener, error) {
		l.Close()
		os.Remove(tmp)
		return nil, err
	}
	if err := os.Chmod(tmp, mode); err != nil {
		return fail(fmt.Errorf("daemon: socket mode: %w", err))
	}
	// The owner stays the daemon's user (root under systemd); only the
	// group changes, which also works for an unprivileged daemon whose
	// own group it is.
	if gid >= 0 {
		if err := os.Chown(tmp, -1, gid); err != nil {
			return fail(fmt.Errorf("daemon: socket group %d: %w", gid, err))
		}
	}
	if tmp != path {
		if err := renameNoReplace(tmp, path); errors.Is(err, fs.ErrExist) {
			return fail(fmt.Errorf("daemon: another process created %s while this one started (is startgated already running?)", path))
		} else if err != nil {
			return fail(fmt.Errorf("daemon: socket: %w", err))
		}
	}
	return &apiListener{Listener: l, path: path}, nil
}

// renameNoReplace renames old to new unless new exists
// (renameat2's RENAME_NOREPLACE). On a filesystem without the flag it is
// a plain rename, after the check removeStale made.
func renameNoReplace(old, new string) error {
	err := unix.Renameat2(unix.AT_FDCWD, old, unix.AT_FDCWD, new, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		return os.Rename(old, new)
	}
	if err != nil {
		return &os.LinkError{Op: "rename", Old: old, New: new, Err: err}
	}
	return nil
}

// maxSocketPath is the size of sun_path in struct sockaddr_un on Linux,
// its terminating NUL included.
const maxSocketPath = 108

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
