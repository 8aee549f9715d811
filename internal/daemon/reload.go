package daemon

import (
	"context"
	"os"
	"strings"

	"go.uber.org/zap"

	"github.com/startgate/startgate/internal/admission"
	"github.com/startgate/startgate/internal/config"
	"github.com/startgate/startgate/internal/criproxy"
	"github.com/startgate/startgate/internal/structdiff"
)

// Reload is how a running daemon re-reads its configuration: on each
// signal (SIGHUP, which the unit's ExecReload sends after `startgated
// config check` passed) it loads the file again and applies what can
// change while serving:
//   - [admission]: the whole policy is replaced by the file's, so values
//     set at run time (`startgatectl set`) give way to the file's when the
//     reload changes this section, and are kept when it does not;
//   - daemon.log_level;
//   - the CRI classification: cri.class_annotation,
//     cri.critical_annotation_namespaces, cri.default_class, cri.rules
//     (starts already queued keep their class).
//
// Any other change (sockets, limits per peer, pressure, warm-up, pulls,
// prefetch, kubernetes, metrics) is logged as needing a restart and not
// applied; a file that does not load or validate changes nothing.
type Reload struct {
	// Signals delivers one value per reload asked for.
	Signals <-chan os.Signal
	// Load reads and validates the configuration again, command-line
	// overrides included.
	Load func() (*config.Config, error)
	// Level is the running logger's level, set from daemon.log_level.
	Level zap.AtomicLevel
}

// reloadable are the keys (as structdiff names them by their toml tags)
// a reload applies; a key matches itself and everything under it.
var reloadable = []string{
	"admission",
	"daemon.log_level",
	"cri.class_annotation",
	"cri.critical_annotation_namespaces",
	"cri.default_class",
	"cri.rules",
}

func isReloadable(change string) bool {
	key, _, _ := strings.Cut(change, ": ")
	for _, k := range reloadable {
		if key == k || strings.HasPrefix(key, k+".") {
			return true
		}
	}
	return false
}

// reloader applies reloads to the running daemon; one goroutine (run)
// owns it.
type reloader struct {
	Reload
	log   *zap.Logger
	n     notifier
	gate  *admission.Gate
	proxy *criproxy.Proxy // nil without the CRI proxy
	cur   *config.Config  // what the daemon runs on
}

func (r *reloader) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.Signals:
			r.n.send("RELOADING=1")
			r.reload()
			r.n.send("READY=1")
		}
	}
}

// reload loads the file and applies what it can; every outcome is logged.
func (r *reloader) reload() {
	next, err := r.Load()
	if err != nil {
		r.log.Error("config reload failed: still running on the configuration loaded before", zap.Error(err))
		return
	}
	var applied, restart []string
	for _, c := range structdiff.Fields(*r.cur, *next, "toml") {
		if isReloadable(c) {
			applied = append(applied, c)
		} else {
			restart = append(restart, c)
		}
	}
	if err := r.apply(next, applied); err != nil {
		r.log.Error("config reload failed: still running on the configuration loaded before", zap.Error(err))
		return
	}
	if len(restart) > 0 {
		r.log.Warn("config reload: these changes take effect only at a restart (systemctl restart startgated)",
			zap.Strings("not_applied", restart))
	}
	r.log.Info("config reloaded", zap.Strings("applied", applied))
}

// apply installs next's reloadable parts; it changes nothing when it
// fails. changed lists the reloadable changes.
func (r *reloader) apply(next *config.Config, changed []string) error {
	has := func(prefix string) bool {
		for _, c := range changed {
			if strings.HasPrefix(c, prefix) {
				return true
			}
		}
		return false
	}
	// Everything that can fail is checked before anything is applied.
	level := r.Level.Level()
	if has("daemon.log_level") {
		if err := level.UnmarshalText([]byte(next.Daemon.LogLevel)); err != nil {
			return err
		}
	}
	var cl *criproxy.Classifier
	if r.proxy != nil && has("cri.") {
		cl = next.Classifier()
		if err := cl.Validate(); err != nil {
			return err
		}
	}
	if has("admission.") {
		if _, err := r.gate.UpdatePolicy(func(p *admission.Policy) { *p = next.Policy() }); err != nil {
			return err
		}
	}
	if cl != nil {
		// Validated above: cannot fail.
		_ = r.proxy.SetClassifier(cl)
	}
	r.Level.SetLevel(level)
	// What was not applied stays as it was: the next reload compares
	// against what the daemon runs on, and says again what needs a
	// restart.
	merged := *r.cur
	merged.Admission = next.Admission
	merged.Daemon.LogLevel = next.Daemon.LogLevel
	merged.CRI.ClassAnnotation = next.CRI.ClassAnnotation
	merged.CRI.CriticalAnnotationNamespaces = next.CRI.CriticalAnnotationNamespaces
	merged.CRI.DefaultClass = next.CRI.DefaultClass
	merged.CRI.Rules = next.CRI.Rules
	r.cur = &merged
	return nil
}
