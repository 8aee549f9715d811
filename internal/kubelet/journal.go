package kubelet

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The record (state.json in the state directory) is the journal of a
// switch. Enable writes, in this order and each synced before the next:
// a backup of every file it will change, the record in phase
// "enabling" naming every file with the digests of its content before
// and after, each file (a temporary file renamed over it), and the
// record in phase "enabled". Disable writes the record in phase
// "disabling", restores each file whose content is still what enable
// wrote from its backup (a created file is removed), then deletes the
// record and the backups. A crash, a full disk or a failed step at any
// point leaves either no record (nothing was changed) or a record that
// names every file that may have been; the next enable or disable
// undoes it first, file by file, by content: a file already restored
// is skipped, so undoing twice is undoing once.

// Phases of the record.
const (
	phaseEnabling  = "enabling"
	phaseEnabled   = "enabled"
	phaseDisabling = "disabling"
)

type record struct {
	Phase    string       `json:"phase"`
	Endpoint string       `json:"endpoint"`
	Switched time.Time    `json:"switched"`
	Files    []fileRecord `json:"files"`
}

type fileRecord struct {
	Path string `json:"path"`
	// Existed: the file was there before (else enable created it).
	Existed bool `json:"existed"`
	// Backup is the backup's name in backup/ when Existed.
	Backup string      `json:"backup,omitempty"`
	Mode   os.FileMode `json:"mode"`
	UID    int         `json:"uid"`
	GID    int         `json:"gid"`
	// Before and After are the content's SHA-256 before and after.
	Before string `json:"before,omitempty"`
	After  string `json:"after"`
	// Setting is what the file sets (kind, old value, via), so that a
	// file changed since can still have its value put back.
	Setting Setting `json:"setting"`
	Old     string  `json:"old,omitempty"`
	// Unit: a systemd unit file or drop-in (systemctl daemon-reload).
	Unit bool `json:"unit,omitempty"`
}

// lastChange records when kubelet's endpoint last changed (enable or
// disable) and which kubelet process ran then: while that process runs,
// kubelet runs on the old endpoint. A process is its pid and its start
// in clock ticks since boot (exact, unlike a wall time derived from the
// boot time's whole seconds).
type lastChange struct {
	Time     time.Time `json:"time"`
	Endpoint string    `json:"endpoint"`
	Pid      int       `json:"pid,omitempty"`
	Ticks    uint64    `json:"startTicks,omitempty"`
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func (n *Node) step(name string) error {
	if n.fault != nil {
		return n.fault(name)
	}
	return nil
}

func (n *Node) recordPath() string { return filepath.Join(n.stateDir(), "state.json") }

func (n *Node) readRecord() (*record, error) {
	b, err := os.ReadFile(n.recordPath())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("kubelet: %w", err)
	}
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("kubelet: the switch's record %s is damaged (%v): every file it changed has a backup in %s; put them back by hand, then remove the record", n.recordPath(), err, filepath.Join(n.stateDir(), "backup"))
	}
	switch r.Phase {
	case phaseEnabling, phaseEnabled, phaseDisabling:
	default:
		return nil, fmt.Errorf("kubelet: the switch's record %s has an unknown phase %q", n.recordPath(), r.Phase)
	}
	return &r, nil
}

func (n *Node) writeRecord(r *record) error {
	if err := n.step("record " + r.Phase); err != nil {
		return err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return writeAtomic(n.recordPath(), append(b, '\n'), 0o600, -1, -1)
}

func (n *Node) removeRecord() error {
	if err := n.step("record remove"); err != nil {
		return err
	}
	if err := os.Remove(n.recordPath()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("kubelet: %w", err)
	}
	_ = os.RemoveAll(filepath.Join(n.stateDir(), "backup"))
	return syncDir(n.stateDir())
}

func (n *Node) readLastChange() *lastChange {
	b, err := os.ReadFile(filepath.Join(n.stateDir(), "last-change.json"))
	if err != nil {
		return nil
	}
	var lc lastChange
	if json.Unmarshal(b, &lc) != nil {
		return nil
	}
	return &lc
}

func (n *Node) writeLastChange(endpoint string) error {
	lc := lastChange{Time: time.Now().UTC(), Endpoint: endpoint}
	if r := n.Running(); r != nil {
		lc.Pid, lc.Ticks = r.Pid, r.ticks
	}
	b, _ := json.Marshal(lc)
	return writeAtomic(filepath.Join(n.stateDir(), "last-change.json"), append(b, '\n'), 0o600, -1, -1)
}

// backupName is a file's backup's name: its path, flattened.
func backupName(p string) string {
	return strings.ReplaceAll(strings.TrimPrefix(p, "/"), "/", "_")
}

// lock takes the state directory's lock, so that two switches (an
// operator's and a package script's) never interleave.
func (n *Node) lock() (func(), error) {
	if err := os.MkdirAll(n.stateDir(), 0o700); err != nil {
		return nil, fmt.Errorf("kubelet: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(n.stateDir(), ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("kubelet: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("kubelet: another startgatectl node enable or disable is running (%s is locked)", f.Name())
	}
	return func() { f.Close() }, nil
}

// owner is a file's mode, uid and gid; a new file gets mode 0644 and
// root's.
func owner(p string) (os.FileMode, int, int) {
	fi, err := os.Stat(p)
	if err != nil {
		return 0o644, -1, -1
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return fi.Mode().Perm(), int(st.Uid), int(st.Gid)
	}
	return fi.Mode().Perm(), -1, -1
}

// writeAtomic replaces file with b: a temporary file in its directory
// with the mode and owner given (uid -1: unchanged), synced, renamed
// over it, and the directory synced, so the file is either all old or
// all new, also after a crash.
func writeAtomic(file string, b []byte, mode os.FileMode, uid, gid int) error {
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return fmt.Errorf("kubelet: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(file), "."+filepath.Base(file)+".startgate-")
	if err != nil {
		return fmt.Errorf("kubelet: %w", err)
	}
	defer os.Remove(tmp.Name()) // after the rename there is nothing to remove
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("kubelet: writing %s: %w", file, err)
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("kubelet: %w", err)
	}
	if uid >= 0 {
		if err := tmp.Chown(uid, gid); err != nil {
			tmp.Close()
			return fmt.Errorf("kubelet: %w", err)
		}
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("kubelet: writing %s: %w", file, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("kubelet: writing %s: %w", file, err)
	}
	if err := os.Rename(tmp.Name(), file); err != nil {
		return fmt.Errorf("kubelet: %w", err)
	}
	return syncDir(filepath.Dir(file))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("kubelet: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("kubelet: syncing %s: %w", dir, err)
	}
	return nil
}
