package config

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/startgate/startgate/internal/admission"
	"github.com/startgate/startgate/internal/criproxy"
)

func writeFile(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDefaultPolicyMatchesAdmission(t *testing.T) {
	got := DefaultConfig().Policy()
	want := admission.DefaultPolicy()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("DefaultConfig().Policy() = %+v, want admission.DefaultPolicy() %+v", got, want)
	}
}

func TestDefaultClassifierMatchesCriproxy(t *testing.T) {
	got := DefaultConfig().Classifier()
	want := criproxy.DefaultClassifier()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("DefaultConfig().Classifier() = %+v, want criproxy.DefaultClassifier() %+v", got, want)
	}
	c := DefaultConfig()
	if w := c.Warmup(); w != defaultWarmup {
		t.Errorf("DefaultConfig().Warmup() = %+v, want %+v", w, defaultWarmup)
	}
	if p := c.Pulls(); p != defaultPulls {
		t.Errorf("DefaultConfig().Pulls() = %+v, want %+v", p, defaultPulls)
	}
}

func TestCRIMapping(t *testing.T) {
	c, err := Load(writeFile(t, `
version = 1
[cri]
enabled = true
class_annotation = ""
critical_annotation_namespaces = ["infra", "kube-system"]
default_class = "low"
[[cri.rules]]
annotation = "team=infra"
class = "HIGH"
[cri.warmup]
poll = "100ms"
settle_cores = 0.5
settle_polls = 3
cap = "30s"
settle_before_ready = true
cpu_source = "cri"
[cri.pulls]
enabled = false
min = 2
max = 5
io_target = 0.2
interval = "2s"
share_window = "30s"
`), true)
	if err != nil {
		t.Fatal(err)
	}
	want := &criproxy.Classifier{
		CriticalNamespaces: []string{"infra", "kube-system"},
		Rules:              []criproxy.Rule{{Annotation: "team=infra", Class: admission.High}},
		Default:            admission.Low,
	}
	if got := c.Classifier(); !reflect.DeepEqual(got, want) {
		t.Errorf("Classifier() = %+v, want %+v", got, want)
	}
	if got, want := c.Warmup(), (criproxy.WarmupPolicy{Poll: 100 * time.Millisecond, SettleCores: 0.5, SettlePolls: 3, Cap: 30 * time.Second, SettleBeforeReady: true, CPUFromCRI: true}); got != want {
		t.Errorf("Warmup() = %+v, want %+v", got, want)
	}
	if got, want := c.Pulls(), (criproxy.PullPolicy{Passthrough: true, Min: 2, Max: 5, IOTarget: 0.2, Interval: 2 * time.Second, ShareWindow: 30 * time.Second}); got != want {
		t.Errorf("Pulls() = %+v, want %+v", got, want)
	}
}

func TestCRIRulesReplaceDefaults(t *testing.T) {
	tests := []struct {
		name string
		text string
		want []Rule
	}{
		{"no rules keeps the defaults", "version = 1\n[cri]\nenabled = true\n", DefaultConfig().CRI.Rules},
		// The first default rule is static = true: a file's first rule
		// must not inherit it.
		{"rules replace, fields not inherited", "version = 1\n[[cri.rules]]\nnamespace = \"batch\"\nclass = \"low\"\n",
			[]Rule{{Namespace: "batch", Class: "low"}}},
		{"empty list has none", "version = 1\n[cri]\nrules = []\n", []Rule{}},
	}
	for _, tt := range tests {
		c, err := Load(writeFile(t, tt.text), true)
		if err != nil {
			t.Fatalf("%s: Load: %v", tt.name, err)
		}
		if !reflect.DeepEqual(c.CRI.Rules, tt.want) {
			t.Errorf("%s: rules = %+v, want %+v", tt.name, c.CRI.Rules, tt.want)
		}
	}
}

func TestDefaultsFromBrief(t *testing.T) {
	// The documented defaults; a change here is a change to the docs.
	c := DefaultConfig()
	checks := []struct {
		name      string
		got, want any
	}{
		{"daemon.socket", c.Daemon.Socket, "/run/startgate/startgate.sock"},
		{"daemon.socket_mode", c.Daemon.SocketMode, "0660"},
		{"daemon.log_format", c.Daemon.LogFormat, "auto"},
		{"metrics.listen", c.Metrics.Listen, "127.0.0.1:10366"},
		{"pressure.source", c.Pressure.Source, "proc"},
		{"pressure.proc_root", c.Pressure.ProcRoot, "/proc"},
		{"pressure.interval", c.Pressure.Interval.Std(), 250 * time.Millisecond},
		{"pressure.smoothing", c.Pressure.Smoothing, 0.5},
		{"admission.max_queue", c.Admission.MaxQueue, 10000},
		{"admission.deadline_margin", c.Admission.DeadlineMargin.Std(), 10 * time.Second},
		{"admission.on_deadline", c.Admission.OnDeadline, "admit"},
		{"admission.aging", c.Admission.Aging.Std(), 10 * time.Second},
		{"admission.max_hold", c.Admission.MaxHold.Std(), 60 * time.Second},
		{"admission.targets.cpu", c.Admission.Targets.CPU, 0.95},
		{"admission.limits.grow_below", c.Admission.Limits.GrowBelow, 0.7},
		{"admission.limits.min_inflight_per_core", c.Admission.Limits.MinInFlightPerCore, 1.0},
		{"admission.limits.min_rate_per_core", c.Admission.Limits.MinRatePerCore, 2.0},
		{"admission.targets.io", c.Admission.Targets.IO, 0.4},
		{"admission.targets.memory", c.Admission.Targets.Memory, 0.1},
		{"admission.limits.max_rate_per_core", c.Admission.Limits.MaxRatePerCore, 25.0},
		{"admission.limits.max_inflight_per_core", c.Admission.Limits.MaxInFlightPerCore, 4.0},
		{"cri.enabled", c.CRI.Enabled, false},
		{"cri.socket", c.CRI.Socket, "/run/startgate/cri.sock"},
		{"cri.containerd_socket", c.CRI.ContainerdSocket, "/run/containerd/containerd.sock"},
		{"cri.class_annotation", c.CRI.ClassAnnotation, "startgate.io/class"},
		{"cri.default_class", c.CRI.DefaultClass, "normal"},
		{"cri.warmup.poll", c.CRI.Warmup.Poll.Std(), 100 * time.Millisecond},
		{"cri.warmup.settle_cores", c.CRI.Warmup.SettleCores, 0.1},
		{"cri.warmup.settle_polls", c.CRI.Warmup.SettlePolls, 1},
		{"cri.warmup.cap", c.CRI.Warmup.Cap.Std(), 60 * time.Second},
		{"cri.warmup.cpu_source", c.CRI.Warmup.CPUSource, "cgroup"},
		{"cri.pulls.min", c.CRI.Pulls.Min, 1},
		{"cri.pulls.max", c.CRI.Pulls.Max, 3},
		{"cri.pulls.io_target", c.CRI.Pulls.IOTarget, 0.4},
		{"cri.pulls.interval", c.CRI.Pulls.Interval.Std(), time.Second},
		{"cri.pulls.share_window", c.CRI.Pulls.ShareWindow.Std(), 5 * time.Second},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %v, want %v", ch.name, ch.got, ch.want)
		}
	}
	if err := c.Validate(); err != nil {
		t.Errorf("DefaultConfig().Validate() = %v, want nil", err)
	}
}

func TestWriteTOMLRoundTrip(t *testing.T) {
	want := DefaultConfig()
	want.Metrics.Listen = "127.0.0.1:9464"
	want.Pressure.Interval = Duration(100 * time.Millisecond)
	want.Admission.OnDeadline = "refuse"
	want.Admission.Limits.InFlight = 7
	want.CRI.Enabled = true
	want.CRI.Rules = []Rule{{Label: "app=db", Class: "high"}, {Annotation: "x", Static: true, Class: "background"}}
	want.CRI.Warmup.Cap = Duration(90 * time.Second)
	want.Prefetch = Prefetch{
		Enabled: true, ContainerdSocket: "/run/k3s/containerd/containerd.sock", Snapshotter: "native",
		Interval: Duration(30 * time.Second), MaxBackoff: Duration(10 * time.Minute), Concurrency: 3,
		LeaseExpiry: Duration(2 * time.Hour), PlainHTTP: []string{"registry.lan:5000", "10.0.0.5"},
		Registries: []string{"registry.lan", "ghcr.io"}, Watch: []string{"registry.lan/app:1"}, DockerConfig: "/root/.docker/config.json", RequestTimeout: Duration(5 * time.Second),
		CredentialHelpers: map[string]string{"123456789012.dkr.ecr.eu-west-1.amazonaws.com": "ecr-login"}, HostsDir: "/etc/k3s/certs.d",
		Bandwidth: 20 << 20, RollbackWindow: Duration(time.Hour), MoveTag: true,
		Notifications: Notifications{Listen: "0.0.0.0:5050", AllowRemote: true, TokenFile: "/etc/startgate/notify.token"},
	}
	var buf bytes.Buffer
	if err := want.WriteTOML(&buf); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), `interval = "100ms"`) {
		t.Errorf("WriteTOML output lacks interval = \"100ms\":\n%s", buf.String())
	}
	got, err := Load(writeFile(t, buf.String()), true)
	if err != nil {
		t.Fatalf("Load(WriteTOML output) error: %v\n%s", err, buf.String())
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("round trip: got %+v, want %+v", got, want)
	}

	// No rules at all survives the trip too.
	want.CRI.Rules = []Rule{}
	buf.Reset()
	if err := want.WriteTOML(&buf); err != nil {
		t.Fatal(err)
	}
	if got, err := Load(writeFile(t, buf.String()), true); err != nil || !reflect.DeepEqual(got.CRI.Rules, []Rule{}) {
		t.Errorf("round trip of rules = []: got %+v, %v; want no rules\n%s", got.CRI.Rules, err, buf.String())
	}
}

func TestLoadMissing(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope.toml")
	c, err := Load(missing, false)
	if err != nil {
		t.Fatalf("Load(%s, implicit) error %v, want defaults", missing, err)
	}
	if !reflect.DeepEqual(c, DefaultConfig()) {
		t.Errorf("Load(%s, implicit) = %+v, want defaults", missing, c)
	}
	if _, err := Load(missing, true); err == nil || !strings.Contains(err.Error(), "nope.toml") {
		t.Errorf("Load(%s, explicit) error = %v, want one naming the file", missing, err)
	}
}

func TestLoadPartial(t *testing.T) {
	c, err := Load(writeFile(t, `
version = 1
[daemon]
socket = "/tmp/x.sock"
[admission.targets]
cpu = 0.5
`), true)
	if err != nil {
		t.Fatal(err)
	}
	if c.Daemon.Socket != "/tmp/x.sock" || c.Admission.Targets.CPU != 0.5 {
		t.Errorf("got socket %q cpu %v, want /tmp/x.sock 0.5", c.Daemon.Socket, c.Admission.Targets.CPU)
	}
	if c.Admission.Targets.IO != 0.4 || c.Daemon.SocketMode != "0660" {
		t.Errorf("unset keys lost their defaults: io %v mode %q", c.Admission.Targets.IO, c.Daemon.SocketMode)
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name string
		text string
		// want are substrings the error must contain.
		want []string
	}{
		{"missing version", "[daemon]\n", []string{"version", "missing"}},
		{"future version", "version = 2\n", []string{"version", "2 not supported"}},
		{"unknown top key", "version = 1\nbogus = 1\n", []string{"bogus: unknown key"}},
		{"unknown nested key", "version = 1\n[admission.limits]\nmax_inflight = 3\n", []string{"admission.limits.max_inflight: unknown key"}},
		{"two unknown keys", "version = 1\n[daemon]\nsokcet = \"x\"\n[metrics]\nport = 1\n", []string{"daemon.sokcet: unknown key", "metrics.port: unknown key"}},
		{"unknown section", "version = 1\n[pressures]\ninterval = \"1s\"\n", []string{"pressures", "unknown key"}},
		{"bad duration", "version = 1\n[pressure]\ninterval = \"fast\"\n", []string{"pressure.interval", `"fast"`}},
		{"duration wrong type", "version = 1\n[admission]\naging = true\n", []string{"admission.aging"}},
		{"zero interval", "version = 1\n[pressure]\ninterval = \"0s\"\n", []string{"pressure.interval: 0s out of range [10ms, 1m0s]"}},
		{"negative margin", "version = 1\n[admission]\ndeadline_margin = \"-1s\"\n", []string{"admission.deadline_margin: -1s out of range [0s, 10m0s]"}},
		// class × aging must not overflow a time.Duration.
		{"aging overflows", "version = 1\n[admission]\naging = \"900000h\"\n", []string{"admission.aging: 900000h0m0s out of range [1ms, 1h0m0s]"}},
		// Multiplied by the cores, 1e300 would overflow an int.
		{"per-core overflows", "version = 1\n[admission.limits]\nmin_inflight_per_core = 1e300\nmax_inflight_per_core = 1e300\n",
			[]string{"admission.limits.min_inflight_per_core: 1e+300 out of range (0, 64]", "admission.limits.max_inflight_per_core: 1e+300 out of range (0, 64]"}},
		// A rate this low freezes the gate.
		{"rate freezes", "version = 1\n[admission.limits]\nrate = 1e-300\n", []string{"admission.limits.rate: 1e-300 out of range: 0 (controlled) or [0.1, 1e+06]"}},
		{"per-core rate freezes", "version = 1\n[admission.limits]\nmin_rate_per_core = 1e-300\n", []string{"admission.limits.min_rate_per_core: 1e-300 out of range [0.1, 1000]"}},
		{"queue too long", "version = 1\n[admission]\nmax_queue = 100000000\n", []string{"admission.max_queue: 100000000 out of range [1, 1000000]"}},
		{"memory_high too low", "version = 1\n[daemon]\nmemory_high = \"1MiB\"\n", []string{"daemon.memory_high: 1MiB out of range: \"0\" (off) or [16MiB, 1TiB]"}},
		{"critical namespace", "version = 1\n[cri]\ncritical_annotation_namespaces = [\"Kube System\"]\n", []string{`cri.critical_annotation_namespaces[1]: "Kube System" is not a namespace`}},
		{"target too high", "version = 1\n[admission.targets]\ncpu = 1.7\n", []string{"admission.targets.cpu: 1.7 out of range (0, 1]"}},
		{"target zero", "version = 1\n[admission.targets]\nmemory = 0.0\n", []string{"admission.targets.memory: 0 out of range"}},
		{"target wrong type", "version = 1\n[admission.targets]\nio = \"high\"\n", []string{"admission.targets.io"}},
		{"smoothing", "version = 1\n[pressure]\nsmoothing = 0.0\n", []string{"pressure.smoothing: 0 out of range (0, 1]"}},
		{"socket_mode not octal", "version = 1\n[daemon]\nsocket_mode = \"rw-rw----\"\n", []string{"daemon.socket_mode", `"rw-rw----"`, "octal"}},
		{"socket_mode too wide", "version = 1\n[daemon]\nsocket_mode = \"7777\"\n", []string{"daemon.socket_mode", `"7777"`}},
		{"socket_mode no owner rw", "version = 1\n[daemon]\nsocket_mode = \"0066\"\n", []string{"daemon.socket_mode", `"0066"`}},
		{"socket_mode as integer", "version = 1\n[daemon]\nsocket_mode = 660\n", []string{"daemon.socket_mode"}},
		{"socket_group unknown", "version = 1\n[daemon]\nsocket_group = \"no-such-group-startgate\"\n", []string{"daemon.socket_group", `"no-such-group-startgate"`}},
		{"on_deadline", "version = 1\n[admission]\non_deadline = \"drop\"\n", []string{"admission.on_deadline", `"drop"`}},
		{"log_level", "version = 1\n[daemon]\nlog_level = \"loud\"\n", []string{"daemon.log_level", `"loud"`}},
		{"log_format", "version = 1\n[daemon]\nlog_format = \"xml\"\n", []string{"daemon.log_format", `"xml"`}},
		{"source", "version = 1\n[pressure]\nsource = \"sysfs\"\n", []string{"pressure.source", `"sysfs"`}},
		{"cgroup without dir", "version = 1\n[pressure]\nsource = \"cgroup\"\n", []string{"pressure.cgroup_dir"}},
		{"max_queue", "version = 1\n[admission]\nmax_queue = 0\n", []string{"admission.max_queue: 0"}},
		{"min above max", "version = 1\n[admission.limits]\nmin_inflight_per_core = 9.0\n", []string{"admission.limits.max_inflight_per_core: 4 below min_inflight_per_core 9"}},
		{"decrease_factor", "version = 1\n[admission.limits]\ndecrease_factor = 1.0\n", []string{"admission.limits.decrease_factor: 1 out of range (0, 1)"}},
		{"negative burst", "version = 1\n[admission.limits]\nburst = -1\n", []string{"admission.limits.burst: -1"}},
		{"negative rate", "version = 1\n[admission.limits]\nrate = -2.5\n", []string{"admission.limits.rate: -2.5"}},
		{"syntax", "version = 1\n[daemon\n", []string{"config:", "table name"}},
		{"cri socket empty", "version = 1\n[cri]\nsocket = \"\"\n", []string{"cri.socket: must not be empty"}},
		{"cri socket is the api socket", "version = 1\n[daemon]\nsocket = \"/run/x.sock\"\n[cri]\nsocket = \"/run/x.sock\"\n", []string{"cri.socket", "daemon.socket"}},
		{"cri proxies to itself", "version = 1\n[cri]\nsocket = \"/run/c.sock\"\ncontainerd_socket = \"/run//c.sock\"\n", []string{"cri.containerd_socket", "also cri.socket"}},
		{"containerd socket empty", "version = 1\n[cri]\ncontainerd_socket = \"\"\n", []string{"cri.containerd_socket: must not be empty"}},
		{"cri unknown key", "version = 1\n[cri]\nsocket_mode = \"0660\"\n", []string{"cri.socket_mode: unknown key"}},
		{"default_class", "version = 1\n[cri]\ndefault_class = \"urgent\"\n", []string{"cri.default_class", `"urgent"`, "critical, high"}},
		{"default_class empty", "version = 1\n[cri]\ndefault_class = \"\"\n", []string{"cri.default_class: must be set"}},
		{"class_annotation", "version = 1\n[cri]\nclass_annotation = \"a=b\"\n", []string{"cri.class_annotation", `"a=b"`}},
		{"rule matches nothing", "version = 1\n[[cri.rules]]\nclass = \"high\"\n", []string{"cri.rules[1]: matches nothing"}},
		{"rule bad class", "version = 1\n[[cri.rules]]\nnamespace = \"a\"\nclass = \"high\"\n[[cri.rules]]\nnamespace = \"b\"\nclass = \"vip\"\n", []string{"cri.rules[2].class", `"vip"`}},
		{"rule no class", "version = 1\n[[cri.rules]]\nnamespace = \"a\"\n", []string{"cri.rules[1].class: must be set"}},
		{"rule bad label", "version = 1\n[[cri.rules]]\nlabel = \"=x\"\nclass = \"low\"\n", []string{"cri.rules[1].label", `"=x"`}},
		{"rule unknown key", "version = 1\n[[cri.rules]]\nnamespaces = \"a\"\nclass = \"low\"\n", []string{"cri.rules.namespaces: unknown key"}},
		{"warmup poll", "version = 1\n[cri.warmup]\npoll = \"0s\"\n", []string{"cri.warmup.poll: 0s out of range [10ms, 1m0s]"}},
		{"warmup settle_cores", "version = 1\n[cri.warmup]\nsettle_cores = -1.0\n", []string{"cri.warmup.settle_cores: -1"}},
		{"warmup settle_polls", "version = 1\n[cri.warmup]\nsettle_polls = 0\n", []string{"cri.warmup.settle_polls: 0 out of range [1, 1000]"}},
		{"warmup cpu_source", "version = 1\n[cri.warmup]\ncpu_source = \"stats\"\n", []string{`cri.warmup.cpu_source: "stats": want "cgroup" or "cri"`}},
		{"warmup cap below poll", "version = 1\n[cri.warmup]\npoll = \"2s\"\ncap = \"1s\"\n", []string{"cri.warmup.cap: 1s is shorter than cri.warmup.poll 2s"}},
		{"warmup cap bad", "version = 1\n[cri.warmup]\ncap = \"soon\"\n", []string{"cri.warmup.cap", `"soon"`}},
		{"containerd socket relative", "version = 1\n[cri]\ncontainerd_socket = \"containerd.sock\"\n", []string{`cri.containerd_socket: "containerd.sock" must be an absolute path`}},
		{"kubeconfig relative", "version = 1\n[kubernetes]\nkubeconfig = \"kubelet.conf\"\n", []string{`kubernetes.kubeconfig: "kubelet.conf" must be an absolute path`}},
		{"node name invalid", "version = 1\n[kubernetes]\nnode_name = \"Node_A\"\n", []string{`kubernetes.node_name: "Node_A" is not a node name`}},
		{"pulls min", "version = 1\n[cri.pulls]\nmin = 0\n", []string{"cri.pulls.min: 0 out of range [1, 64]"}},
		{"pulls max below min", "version = 1\n[cri.pulls]\nmin = 4\n", []string{"cri.pulls.max: 3 below cri.pulls.min 4"}},
		{"pulls io_target", "version = 1\n[cri.pulls]\nio_target = 1.5\n", []string{"cri.pulls.io_target: 1.5 out of range (0, 1]"}},
		{"pulls interval", "version = 1\n[cri.pulls]\ninterval = \"-1s\"\n", []string{"cri.pulls.interval: -1s out of range [10ms, 1m0s]"}},
		{"pulls share_window negative", "version = 1\n[cri.pulls]\nshare_window = \"-1s\"\n", []string{"cri.pulls.share_window: -1s out of range [0s, 5m0s]"}},
		{"pulls share_window too long", "version = 1\n[cri.pulls]\nshare_window = \"1h\"\n", []string{"cri.pulls.share_window: 1h0m0s out of range [0s, 5m0s]"}},
		{"prefetch unknown key", "version = 1\n[prefetch]\ntoken = \"x\"\n", []string{"prefetch.token: unknown key"}},
		{"prefetch containerd_socket relative", "version = 1\n[prefetch]\ncontainerd_socket = \"c.sock\"\n", []string{"prefetch.containerd_socket", `"c.sock"`}},
		{"prefetch snapshotter", "version = 1\n[prefetch]\nsnapshotter = \"\"\n", []string{"prefetch.snapshotter: must not be empty"}},
		{"prefetch interval", "version = 1\n[prefetch]\ninterval = \"0s\"\n", []string{"prefetch.interval: 0s out of range [100ms, 24h0m0s]"}},
		{"prefetch interval bad", "version = 1\n[prefetch]\ninterval = \"often\"\n", []string{"prefetch.interval", `"often"`}},
		{"prefetch max_backoff below interval", "version = 1\n[prefetch]\ninterval = \"10m\"\nmax_backoff = \"1m\"\n", []string{"prefetch.max_backoff: 1m0s is shorter than prefetch.interval 10m0s"}},
		{"prefetch concurrency", "version = 1\n[prefetch]\nconcurrency = 0\n", []string{"prefetch.concurrency: 0 out of range [1, 64]"}},
		{"prefetch lease_expiry", "version = 1\n[prefetch]\nlease_expiry = \"-1h\"\n", []string{"prefetch.lease_expiry: -1h0m0s out of range [1s, 720h0m0s]"}},
		{"prefetch plain_http", "version = 1\n[prefetch]\nplain_http = [\"ok:5000\", \"http://reg\"]\n", []string{"prefetch.plain_http[2]", `"http://reg"`}},
		{"prefetch registries", "version = 1\n[prefetch]\nregistries = [\"ok\", \"bad/host\"]\n", []string{"prefetch.registries[2]", `"bad/host"`}},
		{"prefetch docker_config", "version = 1\n[prefetch]\ndocker_config = \"config.json\"\n", []string{"prefetch.docker_config", `"config.json"`}},
		{"fleet without the API", "version = 1\n[prefetch]\nenabled = true\n[fleet]\nenabled = true\n", []string{"fleet.enabled", "kubernetes.enabled"}},
		{"fleet without prefetch", "version = 1\n[kubernetes]\nenabled = true\n[fleet]\nenabled = true\n", []string{"fleet.enabled", "prefetch.enabled"}},
		{"fleet retry", "version = 1\n[fleet]\nretry_min = \"10s\"\nretry_max = \"1s\"\n", []string{"fleet.retry_max", "shorter than fleet.retry_min"}},
		{"fleet slots", "version = 1\n[fleet]\nupstream_slots = 0\n", []string{"fleet.upstream_slots", "out of range [1, 10000]"}},
		{"prefetch hosts_dir", "version = 1\n[prefetch]\nhosts_dir = \"certs.d\"\n", []string{"prefetch.hosts_dir", `"certs.d"`}},
		{"prefetch credential helper name", "version = 1\n[prefetch.credential_helpers]\n\"reg.example\" = \"../../bin/sh\"\n", []string{`prefetch.credential_helpers."reg.example"`, `"../../bin/sh" is not a helper name`}},
		{"prefetch credential helper host", "version = 1\n[prefetch.credential_helpers]\n\"https://reg.example/\" = \"ecr-login\"\n", []string{`prefetch.credential_helpers."https://reg.example/"`, "not a host"}},
		{"prefetch bandwidth bad", "version = 1\n[prefetch]\nbandwidth = \"fast\"\n", []string{"prefetch.bandwidth", `"fast"`}},
		{"prefetch bandwidth negative", "version = 1\n[prefetch]\nbandwidth = \"-1MiB\"\n", []string{"prefetch.bandwidth", `"-1MiB"`}},
		{"prefetch rollback_window negative", "version = 1\n[prefetch]\nrollback_window = \"-1h\"\n", []string{"prefetch.rollback_window: -1h0m0s out of range [0s, 720h0m0s]"}},
		{"prefetch watch bad", "version = 1\n[prefetch]\nwatch = [\"ok/app:1\", \"Bad Ref\"]\n", []string{"prefetch.watch[2]", `"Bad Ref"`}},
		{"prefetch watch digest", "version = 1\n[prefetch]\nwatch = [\"app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\"]\n", []string{"prefetch.watch[1]", "want a tag"}},
		{"prefetch request_timeout", "version = 1\n[prefetch]\nrequest_timeout = \"0s\"\n", []string{"prefetch.request_timeout"}},
		{"prefetch plain_http type", "version = 1\n[prefetch]\nplain_http = \"reg\"\n", []string{"prefetch.plain_http"}},
		{"notifications listen remote", "version = 1\n[prefetch.notifications]\nlisten = \"0.0.0.0:5050\"\ntoken_file = \"/t\"\n", []string{"prefetch.notifications.listen", `"0.0.0.0:5050"`, "loopback", "allow_remote"}},
		{"notifications listen all interfaces", "version = 1\n[prefetch.notifications]\nlisten = \":5050\"\ntoken_file = \"/t\"\n", []string{"prefetch.notifications.listen", "loopback"}},
		{"notifications listen bad", "version = 1\n[prefetch.notifications]\nlisten = \"localhost\"\ntoken_file = \"/t\"\n", []string{"prefetch.notifications.listen", "IP:port"}},
		{"notifications listen names a host", "version = 1\n[prefetch.notifications]\nlisten = \"registry-hook:5050\"\ntoken_file = \"/t\"\nallow_remote = true\n", []string{"prefetch.notifications.listen", `host "registry-hook" is not an IP address`}},
		{"metrics listen without a port", "version = 1\n[metrics]\nlisten = \"localhost\"\n", []string{`metrics.listen: "localhost" is not IP:port`}},
		{"metrics listen port only", "version = 1\n[metrics]\nlisten = \"10366\"\n", []string{`metrics.listen: "10366" is not IP:port`}},
		{"metrics listen bad host", "version = 1\n[metrics]\nlisten = \"node one:10366\"\n", []string{`metrics.listen: "node one:10366": host "node one" is not an IP address or localhost`}},
		{"metrics listen bad IP", "version = 1\n[metrics]\nlisten = \"127.0.0.300:10366\"\n", []string{"metrics.listen", `host "127.0.0.300"`}},
		{"metrics listen port out of range", "version = 1\n[metrics]\nlisten = \"127.0.0.1:65536\"\n", []string{`metrics.listen: "127.0.0.1:65536": port "65536" is not a number in [0, 65535]`}},
		{"metrics listen port negative", "version = 1\n[metrics]\nlisten = \"127.0.0.1:-1\"\n", []string{"metrics.listen", `port "-1"`}},
		{"metrics listen port named", "version = 1\n[metrics]\nlisten = \"127.0.0.1:http\"\n", []string{"metrics.listen", `port "http"`}},
		{"metrics listen port padded", "version = 1\n[metrics]\nlisten = \"127.0.0.1:010366\"\n", []string{"metrics.listen", `port "010366"`}},
		{"notifications listen is metrics", "version = 1\n[metrics]\nlisten = \"127.0.0.1:9464\"\n[prefetch.notifications]\nlisten = \"127.0.0.1:9464\"\ntoken_file = \"/t\"\n", []string{"prefetch.notifications.listen", "metrics.listen"}},
		{"notifications without token", "version = 1\n[prefetch.notifications]\nlisten = \"127.0.0.1:5050\"\n", []string{"prefetch.notifications.token_file: must be set"}},
		{"notifications token relative", "version = 1\n[prefetch.notifications]\nlisten = \"[::1]:5050\"\ntoken_file = \"tok\"\n", []string{"prefetch.notifications.token_file", `"tok"`}},
		{"all problems at once", "version = 1\n[admission]\non_deadline = \"x\"\nmax_queue = -1\n[admission.targets]\ncpu = 2.0\n",
			[]string{"admission.on_deadline", "admission.max_queue", "admission.targets.cpu: 2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeFile(t, tt.text)
			_, err := Load(path, true)
			if err == nil {
				t.Fatalf("Load(%q) = nil error, want one containing %q", tt.text, tt.want)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "config: ") {
				t.Errorf("Load(%q) error %q lacks the package prefix", tt.text, msg)
			}
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("Load(%q) error:\n%s\nwant it to contain %q", tt.text, msg, w)
				}
			}
		})
	}
}

// The addresses metrics.listen takes: IP:port, localhost:port, every
// address (":port"), port 0 for tests, and "" for off.
func TestMetricsListenAccepted(t *testing.T) {
	for _, v := range []string{"", "127.0.0.1:10366", "[::1]:10366", ":10366", "0.0.0.0:10366", "localhost:10366", "127.0.0.1:0", "10.0.0.7:65535"} {
		c := DefaultConfig()
		c.Metrics.Listen = v
		if err := c.Validate(); err != nil {
			t.Errorf("metrics.listen = %q: %v, want it accepted", v, err)
		}
	}
}

// A file that is not there at the default path gives the defaults and
// says so; an explicitly named one is an error.
func TestLoadFoundReportsMissingFile(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "none.toml")
	c, found, err := LoadFound(missing, false)
	if err != nil || found || !reflect.DeepEqual(c, DefaultConfig()) {
		t.Errorf("LoadFound(missing, not explicit) = %+v, found %v, %v; want the defaults, not found, no error", c, found, err)
	}
	if _, _, err := LoadFound(missing, true); err == nil || !strings.Contains(err.Error(), "none.toml") {
		t.Errorf("LoadFound(missing, explicit) = %v, want an error naming the file", err)
	}
	if _, found, err := LoadFound(writeFile(t, "version = 1\n"), false); err != nil || !found {
		t.Errorf("LoadFound(present) = found %v, %v; want found, no error", found, err)
	}
}

func TestPrefetchHelpers(t *testing.T) {
	c := DefaultConfig()
	if c.Prefetch.Enabled || c.Prefetch.Notifications.Listen != "" {
		t.Errorf("prefetch defaults on: %+v", c.Prefetch)
	}
	if got, want := c.PrefetchContainerdSocket(), c.CRI.ContainerdSocket; got != want {
		t.Errorf("PrefetchContainerdSocket() = %q, want cri.containerd_socket %q", got, want)
	}
	c.Prefetch.ContainerdSocket = "/run/other.sock"
	if got := c.PrefetchContainerdSocket(); got != "/run/other.sock" {
		t.Errorf("PrefetchContainerdSocket() = %q, want /run/other.sock", got)
	}
	// Remote listening is allowed only when asked for.
	c.Prefetch.Notifications = Notifications{Listen: "0.0.0.0:5050", AllowRemote: true, TokenFile: "/t"}
	if err := c.Validate(); err != nil {
		t.Errorf("allow_remote = true: Validate() = %v", err)
	}

	dir := t.TempDir()
	write := func(name, text string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tt := range []struct {
		name, text string
		mode       os.FileMode
		want       string // token, or a substring of the error
		ok         bool
	}{
		{"good", "s3cret\n", 0o600, "s3cret", true},
		{"group readable", "s3cret", 0o640, "s3cret", true},
		{"world readable", "s3cret", 0o644, "mode 0644", false},
		{"empty", " \n", 0o600, "is empty", false},
		{"two words", "a b", 0o600, "more than one word", false},
	} {
		c.Prefetch.Notifications.TokenFile = write(tt.name, tt.text, tt.mode)
		got, err := c.NotificationToken()
		switch {
		case tt.ok && (err != nil || got != tt.want):
			t.Errorf("%s: NotificationToken() = %q, %v; want %q", tt.name, got, err, tt.want)
		case !tt.ok && (err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "prefetch.notifications.token_file")):
			t.Errorf("%s: NotificationToken() error = %v, want one naming the key and containing %q", tt.name, err, tt.want)
		}
	}
	c.Prefetch.Notifications.TokenFile = filepath.Join(dir, "missing")
	if _, err := c.NotificationToken(); err == nil || !strings.Contains(err.Error(), "prefetch.notifications.token_file") {
		t.Errorf("missing token file: error = %v, want one naming the key", err)
	}
}

func TestSocketHelpers(t *testing.T) {
	c := DefaultConfig()
	if m, err := c.SocketFileMode(); err != nil || m != 0o660 {
		t.Errorf("SocketFileMode() = %o, %v, want 660, nil", m, err)
	}
	if g, err := c.SocketGID(); err != nil || g != os.Getgid() {
		t.Errorf("SocketGID() with \"\" = %d, %v, want %d", g, err, os.Getgid())
	}
	c.Daemon.SocketGroup = "0"
	if g, err := c.SocketGID(); err != nil || g != 0 {
		t.Errorf("SocketGID() with \"0\" = %d, %v, want 0", g, err)
	}
	c.Daemon.SocketGroup = "root"
	if g, err := c.SocketGID(); err != nil || g != 0 {
		t.Errorf("SocketGID() with \"root\" = %d, %v, want 0", g, err)
	}
}

func TestPrintDefault(t *testing.T) {
	var buf bytes.Buffer
	if err := DefaultConfig().WriteTOML(&buf); err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + buf.String())
}

func TestWriteTOMLDocumentsEveryKey(t *testing.T) {
	var buf bytes.Buffer
	if err := DefaultConfig().WriteTOML(&buf); err != nil {
		t.Fatal(err)
	}
	section := ""
	for _, line := range strings.Split(buf.String(), "\n") {
		line = strings.TrimSpace(line)
		key := ""
		switch {
		case strings.HasPrefix(line, "["):
			section = strings.Trim(line, "[]")
			key = section
		case strings.Contains(line, " = ") && !strings.HasPrefix(line, "#"):
			key, _, _ = strings.Cut(line, " = ")
			if section != "" {
				key = section + "." + key
			}
		default:
			continue
		}
		if _, ok := keyDocs[key]; !ok {
			t.Errorf("key %s has no entry in keyDocs", key)
		}
	}
}

func TestSize(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want Size
	}{
		{"0", 0}, {"50MiB", 50 << 20}, {"50MB", 50 << 20}, {"50m", 50 << 20}, {"1GiB", 1 << 30}, {"512", 512},
	} {
		var z Size
		if err := z.UnmarshalText([]byte(tt.in)); err != nil || z != tt.want {
			t.Errorf("Size(%q) = %d, %v; want %d", tt.in, z, err, tt.want)
			continue
		}
		// The string form reads back to the same size.
		b, _ := z.MarshalText()
		var back Size
		if err := back.UnmarshalText(b); err != nil || back != z {
			t.Errorf("Size(%q) -> %q -> %d, %v", tt.in, b, back, err)
		}
	}
	c, err := Load(writeFile(t, "version = 1\n[prefetch]\nbandwidth = \"20MiB\"\nrollback_window = \"0s\"\nmove_tag = true\n"), true)
	if err != nil {
		t.Fatal(err)
	}
	if c.Prefetch.Bandwidth != 20<<20 || c.Prefetch.RollbackWindow != 0 || !c.Prefetch.MoveTag {
		t.Errorf("parsed %+v", c.Prefetch)
	}
}

func TestWatchRegistries(t *testing.T) {
	p := Prefetch{Watch: []string{"registry.example.com:5000/app:1", "registry.example.com:5000/b:2", "busybox:1"}}
	if got, want := p.WatchRegistries(), []string{"registry.example.com:5000", "docker.io"}; !reflect.DeepEqual(got, want) {
		t.Errorf("WatchRegistries() = %v, want %v", got, want)
	}
}
