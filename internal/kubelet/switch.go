package kubelet

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// UnitDropIn is the kubelet.service drop-in enable writes on a systemd
// node: kubelet pulls startgated's CRI socket and daemon in and starts
// after them (the daemon is Type=notify: after it is ready), so after a
// reboot kubelet's endpoint is there whatever else is enabled.
const UnitDropIn = "/etc/systemd/system/kubelet.service.d/90-startgate.conf"

const unitDropInText = `# Written by startgatectl node enable: kubelet's container runtime endpoint
# is startgated's CRI socket, so kubelet pulls startgated in and starts after
# it. startgatectl node disable removes this file.
[Unit]
Wants=startgated-cri.socket startgated.service
After=startgated-cri.socket startgated.service
`

// configDropIn is the name of the --config-dir drop-in enable writes
// when nothing sets the endpoint and kubelet reads a drop-in directory.
const configDropIn = "90-startgate.conf"

// Edit is one file a plan changes.
type Edit struct {
	Path string `json:"path"`
	// Existed: the file is there (else the plan creates it).
	Existed bool   `json:"existed"`
	Before  []byte `json:"-"`
	After   []byte `json:"-"`
	// Setting is the place and the value it will hold ("" for the unit
	// drop-in, which sets no endpoint).
	Setting Setting `json:"setting"`
	// Old is the value the place held ("" when it did not set it).
	Old  string `json:"old,omitempty"`
	Unit bool   `json:"unit,omitempty"`
}

// Plan is what an enable or disable would change.
type Plan struct {
	Endpoint string  `json:"endpoint"`
	Layout   *Layout `json:"layout"`
	Edits    []Edit  `json:"edits"`
	// Undo: the plan first undoes a record left by an interrupted or
	// overridden switch.
	Undo []string `json:"undo,omitempty"`
}

// Result is what an enable or disable did.
type Result struct {
	Edits []Edit `json:"edits"`
	// Notes are what the operator should know (an interrupted switch
	// undone, a file changed since and left).
	Notes []string `json:"notes,omitempty"`
	// DaemonReload: a unit file changed; systemctl daemon-reload before
	// restarting kubelet.
	DaemonReload bool `json:"daemonReload,omitempty"`
}

// Changed: the result changed something kubelet reads.
func (r *Result) Changed() bool { return len(r.Edits) > 0 }

// PlanEnable computes the edits that point kubelet at endpoint, checked
// by resolving the layout again over them.
func (n *Node) PlanEnable(endpoint string) (*Plan, error) {
	if endpoint == "" {
		endpoint = StartgateEndpoint
	}
	l, err := n.Resolve()
	if err != nil {
		return nil, err
	}
	p := &Plan{Endpoint: endpoint, Layout: l}
	if l.Effective != endpoint {
		e, err := n.endpointEdit(l, endpoint)
		if err != nil {
			return nil, err
		}
		p.Edits = append(p.Edits, e)
	}
	if l.Unit != "" {
		if b, err := n.readFile(UnitDropIn); err != nil || string(b) != unitDropInText {
			e := Edit{Path: UnitDropIn, After: []byte(unitDropInText), Unit: true}
			if err == nil {
				e.Existed, e.Before = true, b
			}
			p.Edits = append(p.Edits, e)
		}
	}
	return p, n.check(p)
}

// endpointEdit changes the place that wins, or adds one where kubelet
// will read it first.
func (n *Node) endpointEdit(l *Layout, endpoint string) (Edit, error) {
	if len(l.Settings) == 0 {
		switch {
		case l.ConfigDir != "":
			// Nothing sets it: a drop-in of startgate's own, in the
			// format of the main file, removed by disable.
			p := filepath.Join(l.ConfigDir, configDropIn)
			// Only these keys: a drop-in is a JSON merge patch, and
			// any other key would override the main file.
			m := map[string]string{"apiVersion": configAPIVersion, "kind": configKind, "containerRuntimeEndpoint": endpoint}
			b, err := yaml.Marshal(m)
			if main := l.configs[l.ConfigFile]; main != nil && main.JSON {
				b, err = jsonIndent(m)
			}
			if err != nil {
				return Edit{}, err
			}
			return Edit{Path: p, After: b, Setting: Setting{File: p, Kind: KindDropIn, Value: endpoint, Via: "--config-dir"}}, nil
		case l.ConfigFile != "":
			return n.fileEdit(Setting{File: l.ConfigFile, Kind: KindConfig, Via: "--config"}, endpoint, "")
		default:
			return Edit{}, fmt.Errorf("%w: kubelet (%s) has no --config, no --config-dir and no --container-runtime-endpoint: there is no file to set the endpoint in. Add --container-runtime-endpoint=%s to kubelet's command line where it is set, then run this again", ErrUnsupported, l.Unit, ContainerdEndpoint)
		}
	}
	w := l.Settings[0]
	if w.Kind == KindCommandLine {
		return Edit{}, fmt.Errorf("%w: kubelet sets its runtime endpoint on its command line (%s) and there is no %s unit to change it in: change it where kubelet is started", ErrUnsupported, w.Via, KubeletUnit)
	}
	return n.fileEdit(w, endpoint, w.Value)
}

func (n *Node) fileEdit(s Setting, endpoint, old string) (Edit, error) {
	b, err := n.readFile(s.File)
	if err != nil {
		return Edit{}, fmt.Errorf("kubelet: %w", err)
	}
	out, err := setEndpoint(s.Kind, b, s.File, endpoint)
	if err != nil {
		return Edit{}, err
	}
	s.Value = endpoint
	unitFile := s.Kind == KindFlag && strings.Contains(s.File, "/systemd/")
	return Edit{Path: s.File, Existed: true, Before: b, After: out, Setting: s, Old: old, Unit: unitFile}, nil
}

// check resolves the layout over the plan's edits: kubelet must then
// read the plan's endpoint from the file the plan meant, with every
// other argument as it was.
func (n *Node) check(p *Plan) error {
	if len(p.Edits) == 0 {
		return nil
	}
	over := *n
	over.overlay = map[string][]byte{}
	for _, e := range p.Edits {
		over.overlay[e.Path] = e.After
	}
	l, err := over.Resolve()
	if err != nil {
		return fmt.Errorf("kubelet: after the planned change kubelet's set-up would not read: %w (nothing was changed)", err)
	}
	if l.Effective != p.Endpoint {
		return fmt.Errorf("kubelet: after the planned change kubelet would still use %s (set in %s), not %s: nothing was changed", l.Effective, settingFile(l), p.Endpoint)
	}
	if len(l.Args) != len(p.Layout.Args) {
		return fmt.Errorf("kubelet: the planned change would change kubelet's command line beyond the endpoint (%d arguments, was %d): nothing was changed", len(l.Args), len(p.Layout.Args))
	}
	for i := range l.Args {
		a, b := l.Args[i].Value, p.Layout.Args[i].Value
		if a != b && endpointValue(l.Args[i]) != p.Endpoint {
			return fmt.Errorf("kubelet: the planned change would change kubelet's argument %q into %q: nothing was changed", b, a)
		}
	}
	return nil
}

func settingFile(l *Layout) string {
	if len(l.Settings) == 0 {
		return "no file: kubelet's default"
	}
	return l.Settings[0].File
}

// Enable points kubelet at endpoint (StartgateEndpoint when "").
// Idempotent: with kubelet pointing there already and the unit drop-in
// in place it changes nothing. A record left by an interrupted switch,
// or one whose change something else has since undone, is undone first.
func (n *Node) Enable(endpoint string) (*Result, error) {
	unlock, err := n.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	if endpoint == "" {
		endpoint = StartgateEndpoint
	}
	res := &Result{}
	rec, err := n.readRecord()
	if err != nil {
		return nil, err
	}
	if rec != nil && rec.Phase == phaseEnabled && rec.Endpoint == endpoint {
		if p, err := n.PlanEnable(endpoint); err == nil && len(p.Edits) == 0 {
			return res, nil
		}
	}
	if rec != nil {
		why := "an interrupted " + strings.TrimSuffix(rec.Phase, "ing") + "e"
		if rec.Phase == phaseEnabled {
			why = "the switch of " + rec.Switched.Format(time.RFC3339) + ", since changed by something else,"
		}
		if err := n.undo(rec, res); err != nil {
			return res, fmt.Errorf("kubelet: undoing %s: %w", why, err)
		}
		res.Notes = append(res.Notes, why+" was undone first")
	}
	p, err := n.PlanEnable(endpoint)
	if err != nil {
		return res, err
	}
	if len(p.Edits) == 0 {
		return res, nil
	}
	rec = &record{Phase: phaseEnabling, Endpoint: endpoint, Switched: time.Now().UTC()}
	if err := os.MkdirAll(filepath.Join(n.stateDir(), "backup"), 0o700); err != nil {
		return res, fmt.Errorf("kubelet: %w", err)
	}
	for _, e := range p.Edits {
		fr := fileRecord{Path: e.Path, Existed: e.Existed, After: digest(e.After), Setting: e.Setting, Old: e.Old, Unit: e.Unit}
		fr.Mode, fr.UID, fr.GID = owner(n.path(e.Path))
		if e.Existed {
			fr.Backup, fr.Before = backupName(e.Path), digest(e.Before)
			if err := n.step("backup " + e.Path); err != nil {
				return res, err
			}
			if err := writeAtomic(filepath.Join(n.stateDir(), "backup", fr.Backup), e.Before, 0o600, -1, -1); err != nil {
				return res, fmt.Errorf("kubelet: backing up %s (nothing was changed): %w", e.Path, err)
			}
		}
		rec.Files = append(rec.Files, fr)
	}
	if err := n.writeRecord(rec); err != nil {
		return res, fmt.Errorf("kubelet: recording the switch (nothing was changed): %w", err)
	}
	for i, e := range p.Edits {
		if err := n.step("write " + e.Path); err != nil {
			return res, err
		}
		fr := rec.Files[i]
		if err := writeAtomic(n.path(e.Path), e.After, fr.Mode, fr.UID, fr.GID); err != nil {
			return res, fmt.Errorf("%w; startgatectl node disable (or enable) undoes what was changed", err)
		}
		res.Edits = append(res.Edits, e)
		res.DaemonReload = res.DaemonReload || e.Unit
	}
	rec.Phase = phaseEnabled
	if err := n.writeRecord(rec); err != nil {
		return res, fmt.Errorf("%w; startgatectl node disable (or enable) undoes what was changed", err)
	}
	return res, n.writeLastChange(endpoint)
}

// ErrNotSwitched is Disable's error when there is no switch to undo and
// kubelet does not point at startgated.
var ErrNotSwitched = errors.New("kubelet: not switched to startgated")

// Disable undoes every change Enable made, from the record: each file
// restored byte for byte from its backup (a file Enable created is
// removed). Without a record, a kubelet pointed at startgated by hand is
// pointed at containerd where it is set.
func (n *Node) Disable() (*Result, error) {
	unlock, err := n.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	res := &Result{}
	rec, err := n.readRecord()
	if err != nil {
		return nil, err
	}
	if rec != nil {
		if err := n.undo(rec, res); err != nil {
			return res, err
		}
	} else {
		l, err := n.Resolve()
		if err != nil {
			return nil, err
		}
		if !isStartgateEndpoint(l.Effective) {
			return nil, ErrNotSwitched
		}
		// Switched by hand: every place that names a startgated socket
		// goes to containerd's, one file at a time (each write whole; a
		// second run finishes an interrupted one).
		for _, s := range l.Settings {
			if !isStartgateEndpoint(s.Value) {
				continue
			}
			if s.Kind == KindCommandLine {
				return res, fmt.Errorf("%w: kubelet has %s on its command line (%s) and there is no %s unit: change it where kubelet is started", ErrUnsupported, s.Value, s.Via, KubeletUnit)
			}
			e, err := n.fileEdit(s, ContainerdEndpoint, s.Value)
			if err != nil {
				return res, err
			}
			if err := n.step("write " + e.Path); err != nil {
				return res, err
			}
			mode, uid, gid := owner(n.path(e.Path))
			if err := writeAtomic(n.path(e.Path), e.After, mode, uid, gid); err != nil {
				return res, err
			}
			res.Edits = append(res.Edits, e)
			res.DaemonReload = res.DaemonReload || e.Unit
		}
		res.Notes = append(res.Notes, "no record of a switch by startgatectl: every place naming startgated's socket was set to "+ContainerdEndpoint)
	}
	l, err := n.Resolve()
	if err == nil && isStartgateEndpoint(l.Effective) {
		return res, fmt.Errorf("kubelet: still points at %s, set in %s, which startgatectl did not write: change it there", l.Effective, settingFile(l))
	}
	return res, n.writeLastChange(ContainerdEndpoint)
}

// undo puts back every file of rec, newest first, by content: a file
// still as enable wrote it gets its backup (or is removed), a file as it
// was before is left, and a file changed since by someone else gets only
// its value put back if it still names rec's endpoint, else is left and
// named in a note. Then the record and backups go.
func (n *Node) undo(rec *record, res *Result) error {
	if rec.Phase != phaseDisabling {
		rec.Phase = phaseDisabling
		if err := n.writeRecord(rec); err != nil {
			return err
		}
	}
	var errs []error
	for i := len(rec.Files) - 1; i >= 0; i-- {
		f := rec.Files[i]
		cur, err := os.ReadFile(n.path(f.Path))
		missing := errors.Is(err, os.ErrNotExist)
		if err != nil && !missing {
			errs = append(errs, fmt.Errorf("kubelet: %w", err))
			continue
		}
		switch {
		case !f.Existed && missing, f.Existed && !missing && digest(cur) == f.Before:
			continue // as it was
		case !f.Existed && digest(cur) == f.After:
			if err := n.step("remove " + f.Path); err != nil {
				return err
			}
			if err := os.Remove(n.path(f.Path)); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("kubelet: %w", err))
				continue
			}
			_ = syncDir(filepath.Dir(n.path(f.Path)))
			res.Edits = append(res.Edits, Edit{Path: f.Path, Existed: true, Before: cur, Setting: f.Setting, Old: f.Setting.Value, Unit: f.Unit})
		case f.Existed && (missing || digest(cur) == f.After):
			b, err := os.ReadFile(filepath.Join(n.stateDir(), "backup", f.Backup))
			if err != nil || digest(b) != f.Before {
				errs = append(errs, fmt.Errorf("kubelet: the backup of %s (%s) is missing or damaged: restore the file by hand; its old %s value was %q", f.Path, filepath.Join(n.stateDir(), "backup", f.Backup), f.Setting.Kind, f.Old))
				continue
			}
			if err := n.restore(f, cur, b, f.Old, rec.Endpoint, res); err != nil {
				if errors.Is(err, errStep) {
					return err
				}
				errs = append(errs, err)
				continue
			}
		default:
			// Changed since by someone else: keep their change; put
			// the old value back only where it still names ours.
			if f.Setting.Kind == "" || !strings.Contains(string(cur), rec.Endpoint) {
				res.Notes = append(res.Notes, fmt.Sprintf("%s was changed since the switch and no longer sets %s: left as it is", f.Path, rec.Endpoint))
				continue
			}
			old := f.Old
			if old == "" {
				old = ContainerdEndpoint
			}
			out, err := setEndpoint(f.Setting.Kind, cur, f.Path, old)
			if err != nil {
				errs = append(errs, fmt.Errorf("%w (the file was changed since the switch)", err))
				continue
			}
			if err := n.restore(f, cur, out, old, rec.Endpoint, res); err != nil {
				if errors.Is(err, errStep) {
					return err
				}
				errs = append(errs, err)
				continue
			}
			res.Notes = append(res.Notes, fmt.Sprintf("%s was changed since the switch: only its endpoint was set back to %s, the rest of the change kept", f.Path, old))
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	return n.removeRecord()
}

// setEndpoint sets the endpoint where a place of kind writes it.
func setEndpoint(kind string, b []byte, file, value string) ([]byte, error) {
	if kind == KindFlag {
		return setFlagValue(b, file, value)
	}
	return setConfigValue(b, file, value)
}

// errStep marks a failure of the fault hook: it stops the operation
// where a crash would.
var errStep = errors.New("kubelet: stopped")

// restore writes out over a file of the record (whose content is cur)
// and records the edit; value is what the place sets again, old what it
// set.
func (n *Node) restore(f fileRecord, cur, out []byte, value, old string, res *Result) error {
	if err := n.step("restore " + f.Path); err != nil {
		return fmt.Errorf("%w: %w", errStep, err)
	}
	if err := writeAtomic(n.path(f.Path), out, f.Mode, f.UID, f.GID); err != nil {
		return err
	}
	res.Edits = append(res.Edits, Edit{Path: f.Path, Existed: true, Before: cur, After: out, Setting: Setting{File: f.Path, Kind: f.Setting.Kind, Value: value, Via: f.Setting.Via}, Old: old, Unit: f.Unit})
	res.DaemonReload = res.DaemonReload || f.Unit
	return nil
}

// Status is the switch's state on this node.
type Status struct {
	Layout *Layout `json:"layout"`
	// Enabled: kubelet's next start uses a startgated socket.
	Enabled bool `json:"enabled"`
	// Switched is when startgatectl switched it, zero if it did not.
	Switched time.Time `json:"switched,omitzero"`
	// Phase is the record's phase; "" without one. "enabling" or
	// "disabling" means an interrupted switch: the next enable or
	// disable undoes it first.
	Phase   string   `json:"phase,omitempty"`
	Running *Running `json:"running,omitempty"`
	// RestartNeeded: the running kubelet started before the endpoint
	// last changed.
	RestartNeeded bool `json:"restartNeeded"`
	// RecordError says why the record cannot be read (then enable and
	// disable refuse until it is dealt with).
	RecordError string `json:"recordError,omitempty"`
}

// Status reads the layout, the record and the running kubelet.
func (n *Node) Status() (*Status, error) {
	l, err := n.Resolve()
	if err != nil {
		return nil, err
	}
	st := &Status{Layout: l, Enabled: isStartgateEndpoint(l.Effective), Running: n.Running()}
	rec, err := n.readRecord()
	if err != nil {
		st.RecordError = err.Error()
	} else if rec != nil {
		st.Phase, st.Switched = rec.Phase, rec.Switched
		// Switched to another socket of startgated's (--endpoint).
		st.Enabled = st.Enabled || rec.Endpoint == l.Effective
	}
	st.RestartNeeded = n.restartNeeded(st.Running)
	return st, nil
}

func (n *Node) restartNeeded(r *Running) bool {
	lc := n.readLastChange()
	if r == nil || lc == nil {
		return false
	}
	if lc.Pid != 0 {
		// The kubelet that ran at the switch still runs.
		return r.Pid == lc.Pid && r.ticks == lc.Ticks
	}
	// None ran at the switch: one that runs now started after it, unless
	// its start (whole seconds of boot time) is clearly before.
	return !r.Started.IsZero() && r.Started.Before(lc.Time.Add(-2*time.Second))
}

// RestartNeeded: a kubelet runs and started before the endpoint last
// changed, so it still uses the old one.
func (n *Node) RestartNeeded() bool { return n.restartNeeded(n.Running()) }
