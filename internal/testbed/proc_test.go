package testbed

import "testing"

func TestParseStat(t *testing.T) {
	for _, tc := range []struct {
		stat  string
		ppid  int
		state byte
		ok    bool
	}{
		{"42 (sleep) S 1 42 42 0 -1", 1, 'S', true},
		{"43 (a) (b) Z 7 1 1", 7, 'Z', true},
		{"44 (no close paren S 1", 0, 0, false},
		{"45 (x)", 0, 0, false},
	} {
		ppid, state, ok := parseStat([]byte(tc.stat))
		if ppid != tc.ppid || state != tc.state || ok != tc.ok {
			t.Errorf("parseStat(%q): got %d %q %v, want %d %q %v", tc.stat, ppid, state, ok, tc.ppid, tc.state, tc.ok)
		}
	}
}

func TestUnescapeMountinfo(t *testing.T) {
	for in, want := range map[string]string{
		`/tmp/sgtb-1/root`:        "/tmp/sgtb-1/root",
		`/tmp/a\040b`:             "/tmp/a b",
		`/tmp/tab\011and\134back`: "/tmp/tab\tand\\back",
		`/tmp/trailing\04`:        `/tmp/trailing\04`,
	} {
		if got := unescapeMountinfo(in); got != want {
			t.Errorf("unescapeMountinfo(%q): got %q, want %q", in, got, want)
		}
	}
}

func TestRefersTo(t *testing.T) {
	const dir = "/tmp/sgtb-1"
	for _, tc := range []struct {
		cmdline string
		want    bool
	}{
		{"containerd-shim-runc-v2\x00-address\x00/tmp/sgtb-1/containerd.sock", true},
		{"containerd\x00--root\x00/tmp/sgtb-1", true},
		{"containerd-shim-runc-v2\x00-address\x00/tmp/sgtb-12/containerd.sock", false},
		{"sleep\x0030", false},
	} {
		if got := refersTo(tc.cmdline, dir); got != tc.want {
			t.Errorf("refersTo(%q): got %v, want %v", tc.cmdline, got, tc.want)
		}
	}
}
