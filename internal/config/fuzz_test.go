package config

import (
	"bytes"
	"testing"
)

// FuzzLoad: any file either loads into a config that every consumer
// accepts (the gate's policy, the proxy's classifier) and that writes back
// to a file loading to the same values, or is refused with an error; none
// panics.
func FuzzLoad(f *testing.F) {
	var def bytes.Buffer
	if err := DefaultConfig().WriteTOML(&def); err != nil {
		f.Fatal(err)
	}
	f.Add(def.String())
	f.Add("version = 1\n")
	f.Add("version = 1\n[admission]\naging = \"900000h\"\n")
	f.Add("version = 1\n[admission.limits]\nmin_inflight_per_core = 1e300\nrate = 1e-300\n")
	f.Add("version = 1\n[[cri.rules]]\nnamespace = \"batch\"\nclass = \"low\"\n[cri.pulls]\nshare_window = \"5m\"\n")
	f.Add("version = 1\n[prefetch]\nenabled = true\nwatch = [\"registry.example/app:1\"]\nregistries = [\"[::1]:5000\"]\n")
	f.Add("version = 2\n")
	f.Fuzz(func(t *testing.T, text string) {
		c := DefaultConfig()
		if err := c.decode("fuzz.toml", text); err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			return
		}
		if err := c.Policy().Validate(); err != nil {
			t.Fatalf("a valid config's policy is refused by the gate: %v\n%s", err, text)
		}
		if err := c.Classifier().Validate(); err != nil {
			t.Fatalf("a valid config's rules are refused by the proxy: %v\n%s", err, text)
		}
		var out bytes.Buffer
		if err := c.WriteTOML(&out); err != nil {
			t.Fatalf("WriteTOML of a valid config: %v", err)
		}
		again := DefaultConfig()
		if err := again.decode("again.toml", out.String()); err != nil {
			t.Fatalf("the written config does not load: %v\n%s", err, out.String())
		}
		if err := again.Validate(); err != nil {
			t.Fatalf("the written config does not validate: %v\n%s", err, out.String())
		}
		if again.Policy() != c.Policy() {
			t.Fatalf("policy changed through WriteTOML: %+v, want %+v", again.Policy(), c.Policy())
		}
	})
}
