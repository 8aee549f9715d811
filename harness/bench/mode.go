package bench

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Via is the CRI endpoint a mode's client talks to.
type Via int

const (
	// Direct is the testbed's containerd.
	Direct Via = iota
	// Startgate is startgated's CRI socket, in front of that containerd.
	Startgate
)

func (v Via) String() string {
	if v == Startgate {
		return "startgate"
	}
	return "direct"
}

// Mode is one way of starting the burst.
type Mode struct {
	Name string
	Via  Via
	// Limit is a client-side cap on pods in flight, held from the pod's
	// first call (its PullImage) until its ready line (what
	// pod-pacemaker-style tools do); 0 means none.
	Limit int
	// Prefetch: before the burst, the patch is announced to startgated
	// (PrefetchAdd) and the burst waits until startgated has fetched it.
	// Only with Via Startgate.
	Prefetch bool
	// Config is more startgated TOML for this mode alone (a tuning
	// variant side by side with the defaults); startgate-bench kube only,
	// which runs a startgated per mode.
	Config string `json:"-"`
}

// DefaultRegistryMbps is --registry-mbps's default: the registry behind a
// 100 Mbit/s link, a node's share of a remote registry.
const DefaultRegistryMbps = 100

// DefaultRegistryRTT is --registry-rtt's default: a registry in another
// region or a public one, 20 ms away.
const DefaultRegistryRTT = 20 * time.Millisecond

// DefaultModes is what `startgate-bench` runs without --modes.
const DefaultModes = "direct,fixed-2,fixed-4,fixed-8,startgate,startgate-prefetch"

// ParseModes reads a comma-separated list: direct, startgate (admission
// alone), startgate-prefetch (admission, and the patch prefetched before
// the burst), fixed-K (K pods in flight at most, on the direct endpoint),
// and fixed, short for fixed-2,fixed-4,fixed-8. Order is kept (it is the
// order within a round); duplicates are refused.
func ParseModes(s string) ([]Mode, error) {
	var modes []Mode
	seen := map[string]bool{}
	add := func(m Mode) error {
		if seen[m.Name] {
			return fmt.Errorf("bench: mode %s given twice", m.Name)
		}
		seen[m.Name] = true
		modes = append(modes, m)
		return nil
	}
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		var err error
		switch {
		case f == "direct":
			err = add(Mode{Name: f, Via: Direct})
		case f == "startgate":
			err = add(Mode{Name: f, Via: Startgate})
		case f == "startgate-prefetch":
			err = add(Mode{Name: f, Via: Startgate, Prefetch: true})
		case f == "fixed":
			for _, k := range []int{2, 4, 8} {
				if err = add(fixed(k)); err != nil {
					break
				}
			}
		case strings.HasPrefix(f, "fixed-"):
			k, perr := strconv.Atoi(strings.TrimPrefix(f, "fixed-"))
			if perr != nil || k < 1 {
				return nil, fmt.Errorf("bench: mode %q: want fixed-K with K a positive integer", f)
			}
			err = add(fixed(k))
		case f == "":
			return nil, fmt.Errorf("bench: empty mode in %q", s)
		default:
			return nil, fmt.Errorf("bench: unknown mode %q (want direct, fixed-K, fixed, startgate or startgate-prefetch)", f)
		}
		if err != nil {
			return nil, err
		}
	}
	return modes, nil
}

func fixed(k int) Mode {
	return Mode{Name: "fixed-" + strconv.Itoa(k), Via: Direct, Limit: k}
}
