package daemon

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

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
	write := func(name, text string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// What the daemon would refuse at start, config check refuses:
	// values, and the files the config names.
	good := write("good.toml", "version = 1\n", 0o644)
	noPort := write("noport.toml", "version = 1\n[metrics]\nlisten = \"localhost\"\n", 0o644)
	badHost := write("badhost.toml", "version = 1\n[metrics]\nlisten = \"metrics.example:10366\"\n", 0o644)
	badPort := write("badport.toml", "version = 1\n[metrics]\nlisten = \"127.0.0.1:99999\"\n", 0o644)
	token := write("token", "secret\n", 0o644) // readable by others
	openToken := write("opentoken.toml", "version = 1\n[prefetch]\nenabled = true\n[prefetch.notifications]\nlisten = \"127.0.0.1:5050\"\n"+
		"token_file = \""+token+"\"\n", 0o644)
	noProc := write("noproc.toml", "version = 1\n[pressure]\nproc_root = \""+filepath.Join(dir, "no-proc")+"\"\n", 0o644)
	dockerCfg := write("docker.json", "{not json", 0o600)
	badDocker := write("baddocker.toml", "version = 1\n[prefetch]\nenabled = true\ndocker_config = \""+dockerCfg+"\"\n", 0o644)
	tests := []struct {
		name string
		args []string
		want string // "" for success
	}{
		{"metrics.listen without a port", []string{"config", "check", "--config", noPort}, `metrics.listen: "localhost" is not IP:port`},
		{"metrics.listen with a name", []string{"config", "check", "--config", badHost}, `metrics.listen: "metrics.example:10366": host "metrics.example" is not an IP address`},
		{"metrics.listen port out of range", []string{"config", "check", "--config", badPort}, `metrics.listen: "127.0.0.1:99999": port "99999"`},
		{"metrics.listen override without a port", []string{"config", "check", "--config", good, "--metrics-listen", "localhost"}, `metrics.listen: "localhost" is not IP:port`},
		{"token file readable by others", []string{"config", "check", "-q", "--config", openToken}, "prefetch.notifications.token_file: " + token + " has mode 0644"},
		{"proc root missing", []string{"config", "check", "--config", noProc}, "pressure.proc_root"},
		{"docker config unreadable", []string{"config", "check", "--config", badDocker}, "prefetch.docker_config"},
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
	// file must still start with defaults, and config check says so on
	// stderr, --quiet or not.
	for _, args := range [][]string{{"config", "check", "--config", config.DefaultPath}, {"config", "check", "-q"}} {
		cmd := NewCommand()
		var out, errOut bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&errOut)
		cmd.SetArgs(args)
		if err := cmd.Execute(); err != nil {
			t.Errorf("startgated %q (file absent) = %v, want the defaults", args, err)
		}
		if want := "WARNING: " + config.DefaultPath + " does not exist: startgated runs on the built-in defaults"; !strings.Contains(errOut.String(), want) {
			t.Errorf("startgated %q stderr = %q, want it to contain %q", args, errOut.String(), want)
		}
		quiet := args[len(args)-1] == "-q"
		if got := out.String(); quiet && got != "" || !quiet && !strings.HasPrefix(got, "# "+config.DefaultPath+": does not exist; these are the defaults") {
			t.Errorf("startgated %q stdout = %.200q", args, got)
		}
	}
}

// A daemon started without its file runs on the defaults and says so
// in its log, naming the path.
func TestStartWithoutConfigFileWarns(t *testing.T) {
	if _, err := os.Stat(config.DefaultPath); err == nil {
		t.Skipf("%s exists on this machine", config.DefaultPath)
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "--config", config.DefaultPath, "--socket", filepath.Join(dir, "api.sock"), "--metrics-listen", "", "--log-level", "info")
	cmd.Env = append(os.Environ(), childEnv+"=1")
	var logs syncBuffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	waitFor(t, "the start line", func() bool { return strings.Contains(logs.String(), "startgated ready") })
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("startgated exit = %v\n%s", err, logs.String())
		}
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
		t.Fatalf("startgated did not stop on SIGTERM\n%s", logs.String())
	}
	var warn map[string]any
	for _, line := range strings.Split(logs.String(), "\n") {
		var l map[string]any
		if json.Unmarshal([]byte(line), &l) == nil && strings.HasPrefix(fmt.Sprint(l["msg"]), "config file not found") {
			warn = l
		}
	}
	if warn == nil || warn["level"] != "warn" || warn["config"] != config.DefaultPath {
		t.Errorf("no warning naming %s in the log:\n%s", config.DefaultPath, logs.String())
	}
}

// syncBuffer is a bytes.Buffer a child process writes while the test
// reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
