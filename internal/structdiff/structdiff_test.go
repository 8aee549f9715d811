package structdiff

import (
	"slices"
	"testing"
	"time"
)

type inner struct {
	Poll  time.Duration `toml:"poll"`
	Cores float64       `toml:"settle_cores,omitempty"`
}

type outer struct {
	Name    string   `toml:"name"`
	Rules   []string `toml:"rules"`
	Warmup  inner    `toml:"warmup"`
	Skipped int      `toml:"-"`
	private int
}

func TestFields(t *testing.T) {
	a := outer{Name: "x", Rules: []string{"a"}, Warmup: inner{Poll: time.Second, Cores: 0.1}, Skipped: 1, private: 1}
	if got := Fields(a, a, "toml"); len(got) != 0 {
		t.Errorf("a value against itself: %v, want none", got)
	}
	b := a
	b.Rules = []string{"a", "b"}
	b.Warmup.Poll = 2 * time.Second
	b.Skipped, b.private = 2, 2
	want := []string{"rules: [a] -> [a b]", "warmup.poll: 1s -> 2s"}
	if got := Fields(a, b, "toml"); !slices.Equal(got, want) {
		t.Errorf("by toml tag: %q, want %q", got, want)
	}
	want = []string{"Rules: [a] -> [a b]", "Warmup.Poll: 1s -> 2s", "Skipped: 1 -> 2"}
	if got := Fields(a, b, ""); !slices.Equal(got, want) {
		t.Errorf("by field name: %q, want %q", got, want)
	}
}

func TestFieldsPanicsOnMixedTypes(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("no panic for two different types")
		}
	}()
	Fields(outer{}, inner{}, "")
}
