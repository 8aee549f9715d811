// Package config is startgated's versioned TOML configuration.
//
// A file declares `version = 1` and any of the sections [daemon],
// [metrics], [pressure], [admission], [admission.targets] and
// [admission.limits]; whatever it leaves out keeps its default. Defaults
// live in one place: DefaultConfig, which takes the admission section from
// admission.DefaultPolicy so that a daemon configured with nothing behaves
// like a gate configured with nothing.
//
// Load is strict: an unknown key is an error naming the key (a misspelt
// key silently ignored is a limit the operator thinks is set and is not),
// and Validate reports every bad value at once, each naming its key and
// value. The default path may be absent (defaults apply); an explicitly
// given path may not.
//
// Flags override the file: the daemon applies them to the loaded Config
// and validates again. Policy maps the admission section onto
// admission.Policy; WriteTOML prints a Config in the form Load reads, for
// `startgated config default`.
package config
