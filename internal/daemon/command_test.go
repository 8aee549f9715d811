package daemon

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/startgate/startgate/internal/config"
)

func runCommand(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := NewCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

func TestConfigDefaultRoundTrips(t *testing.T) {
	out, err := runCommand(t, "config", "default")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "c.toml")
	if err := os.WriteFile(p, []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := config.Load(p, true)
	if err != nil {
		t.Fatalf("Load(config default output): %v\n%s", err, out)
	}
	if !reflect.DeepEqual(got, config.DefaultConfig()) {
		t.Errorf("config default round trip = %+v, want defaults", got)
	}
	if _, err := runCommand(t, "config", "check", "--config", p); err != nil {
		t.Errorf("config check of the defaults: %v", err)
	}
	if out, err := runCommand(t, "config", "check", "--quiet", "--config", p); err != nil || out != "" {
		t.Errorf("config check --quiet of the defaults = %q, %v; want nothing printed, no error", out, err)
	}
}

func TestConfigCheck(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(bad, []byte("version = 1\n[admission]\non_deadline = \"drop\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		want string // "" for success
	}{
		{"bad value", []string{"config", "check", "--config", bad}, "admission.on_deadline"},
		{"bad value, quiet", []string{"config", "check", "-q", "--config", bad}, "admission.on_deadline"},
		{"missing explicit", []string{"config", "check", "--config", filepath.Join(dir, "none.toml")}, "none.toml"},
		{"bad override", []string{"--config", filepath.Join(dir, "none.toml")}, "none.toml"},
	}
	for _, tt := range tests {
		_, err := runCommand(t, tt.args...)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: startgated %q = %v, want an error containing %q", tt.name, tt.args, err, tt.want)
		}
	}
}

func TestFlagsOverrideFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.toml")
	text := "version = 1\n[daemon]\nsocket = \"/from/file.sock\"\nlog_level = \"warn\"\n[metrics]\nlisten = \"127.0.0.1:1\"\n"
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := NewCommand()
	if err := cmd.ParseFlags([]string{"--config", p, "--socket", "/from/flag.sock", "--metrics-listen", "", "--log-level", "debug"}); err != nil {
		t.Fatal(err)
	}
	// NewCommand's flag variables are reached through the command's
	// flag set, as RunE does.
	f := flags{}
	f.config, _ = cmd.Flags().GetString("config")
	f.socket, _ = cmd.Flags().GetString("socket")
	f.metricsListen, _ = cmd.Flags().GetString("metrics-listen")
	f.logLevel, _ = cmd.Flags().GetString("log-level")
	cfg, _, err := loadConfig(cmd, f)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Daemon.Socket != "/from/flag.sock" || cfg.Metrics.Listen != "" || cfg.Daemon.LogLevel != "debug" {
		t.Errorf("after flags: socket %q metrics %q log %q, want /from/flag.sock, \"\", debug",
			cfg.Daemon.Socket, cfg.Metrics.Listen, cfg.Daemon.LogLevel)
	}

	bad := NewCommand()
	if err := bad.ParseFlags([]string{"--config", p, "--log-level", "loud"}); err != nil {
		t.Fatal(err)
	}
	_, _, err = loadConfig(bad, flags{config: p, logLevel: "loud"})
	if err == nil || !strings.Contains(err.Error(), "daemon.log_level") {
		t.Errorf("--log-level loud: %v, want an error naming daemon.log_level", err)
	}
}

func TestDefaultPathMayBeMissingEvenWhenNamed(t *testing.T) {
	if _, err := os.Stat(config.DefaultPath); err == nil {
		t.Skipf("%s exists on this machine", config.DefaultPath)
	}
	// The unit's ExecStart names the default path; a node without the
	// file must still start with defaults.
	if _, err := runCommand(t, "config", "check", "--config", config.DefaultPath); err != nil {
		t.Errorf("config check --config %s (absent) = %v, want defaults", config.DefaultPath, err)
	}
}
