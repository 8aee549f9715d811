// Package config is startgated's versioned TOML configuration.
//
// A file declares `version = 1` and any of the sections [daemon],
// [metrics], [pressure], [admission], [admission.targets],
// [admission.limits], [cri], [[cri.rules]], [cri.warmup], [cri.pulls],
// [prefetch] and [prefetch.notifications]; whatever it leaves out keeps
// its default.
//
// One file per section, each holding the section's struct, its defaults,
// its help text (the comments WriteTOML prints) and its validation:
// daemon.go ([daemon], [metrics]), pressure.go, admission.go, cri.go and
// prefetch.go. config.go holds the Config that joins them, Load and the
// Validate that runs each section's checks; types.go the TOML value
// types (Duration, Size); write.go WriteTOML.
//
// DefaultConfig assembles the sections' defaults, which come from the
// package each configures: the admission section from
// admission.DefaultPolicy, the CRI classification from
// criproxy.DefaultClassifier, so that a daemon configured with nothing
// behaves like a gate and a proxy configured with nothing. (The proxy's
// warm-up and pull defaults are mirrored in defaultWarmup and
// defaultPulls: criproxy does not export them.)
//
// The [cri] section is validated whether or not cri.enabled is set, so a
// mistake is found when it is made, not when the proxy is turned on.
// [[cri.rules]] is a list: a file that gives any rule replaces the
// default rules as a whole, and `rules = []` leaves none.
//
// Load is strict: an unknown key is an error naming the key (a misspelt
// key silently ignored is a limit the operator thinks is set and is not),
// and Validate reports every bad value at once, each naming its key and
// value. The default path may be absent (defaults apply, and LoadFound
// says so, for the daemon to warn); an explicitly given path may not.
// Listen addresses are IP:port (listenAddr), the form kubelet takes.
//
// Flags override the file: the daemon applies them to the loaded Config
// and validates again. Policy maps the admission section onto
// admission.Policy; Classifier, Warmup and Pulls map the [cri] section
// onto the proxy's settings; WriteTOML prints a Config in the form Load
// reads, for `startgated config default`.
package config
