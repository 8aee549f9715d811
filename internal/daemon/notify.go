package daemon

import (
	"context"
	"fmt"
	"strings"
	"time"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"
	"go.uber.org/zap"

	"github.com/startgate/startgate/internal/admission"
	"github.com/startgate/startgate/internal/pressure"
)

// statusEvery is how often STATUS= is refreshed; `systemctl status` is
// read by people, so a few seconds is fresh enough.
const statusEvery = 5 * time.Second

// statusSource is what the notifier needs of the gate.
type statusSource interface {
	Status() admission.Status
}

var _ statusSource = (*admission.Gate)(nil)

// notifier talks to systemd. Without NOTIFY_SOCKET every call is a no-op,
// which is how the daemon runs outside systemd.
type notifier struct {
	log *zap.Logger
	// cri: the CRI proxy is served, which STATUS= says.
	cri bool
	// alive is the daemon's liveness (controllerTicking), which /healthz
	// answers too: the watchdog is pinged only while it is nil.
	alive func(now time.Time) error
	// note, when set, adds to STATUS= (the metrics endpoint retrying).
	note func() string
}

func (n notifier) send(state string) {
	if _, err := sddaemon.SdNotify(false, state); err != nil {
		n.log.Warn("systemd notify failed", zap.String("state", state), zap.Error(err))
	}
}

// run refreshes STATUS= and pings the watchdog until ctx ends.
func (n notifier) run(ctx context.Context, gate statusSource) {
	wd, err := sddaemon.SdWatchdogEnabled(false)
	if err != nil {
		n.log.Warn("systemd watchdog settings unreadable; not pinging", zap.Error(err))
		wd = 0
	}
	var wdC <-chan time.Time
	if wd > 0 {
		t := time.NewTicker(wd / 2)
		defer t.Stop()
		wdC = t.C
		n.log.Info("systemd watchdog enabled", zap.Duration("interval", wd))
	}
	st := time.NewTicker(statusEvery)
	defer st.Stop()
	status := func() {
		note := ""
		if n.note != nil {
			note = n.note()
		}
		n.send("STATUS=" + statusLine(gate.Status(), n.cri, note))
	}
	status()
	for {
		select {
		case <-ctx.Done():
			return
		case <-st.C:
			status()
		case now := <-wdC:
			// The controller's tick takes the gate's lock: a deadlocked
			// gate stops ticking, alive fails, and the pings stop, which
			// is the point.
			if err := n.alive(now); err != nil {
				n.log.Error("withholding the watchdog ping: systemd restarts startgated when it has none for WatchdogSec", zap.Error(err))
				continue
			}
			n.send(sddaemon.SdNotifyWatchdog)
		}
	}
}

// statusLine is the one-line summary for STATUS=; note, when not "",
// ends it.
func statusLine(s admission.Status, cri bool, note string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "in-flight %d/%d, queued %d, rate %.1f/s", s.InFlight, s.Limits.InFlight, s.Queued, s.Limits.Rate)
	if s.PressureErr != "" {
		b.WriteString(", PSI unavailable (static limits)")
	} else {
		fmt.Fprintf(&b, ", cpu %.0f%% io %.0f%% mem %.0f%%",
			100*s.Pressure.Some[pressure.CPU], 100*s.Pressure.Some[pressure.IO], 100*s.Pressure.Some[pressure.Memory])
	}
	switch {
	case s.Bypassed:
		b.WriteString(", bypassed")
	case s.Draining:
		b.WriteString(", draining")
	case s.Paused:
		b.WriteString(", paused")
	}
	if cri {
		b.WriteString(", cri: on")
	}
	if note != "" {
		b.WriteString(", " + note)
	}
	return b.String()
}
