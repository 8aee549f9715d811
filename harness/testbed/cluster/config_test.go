package cluster

import (
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

// TestKubeletConfig: the rendered KubeletConfiguration is valid YAML with
// the settings doc.go explains, the options applied, and the percentages
// survive the formatting.
func TestKubeletConfig(t *testing.T) {
	c := &Cluster{dir: "/tmp/sgk-1", nodeName: "n1", nodeIP: net.ParseIP("192.0.2.7"), opts: Options{
		RuntimeEndpoint:       "/tmp/sg/cri.sock",
		FeatureGates:          map[string]bool{"EventedPLEG": true, "AAA": false},
		RuntimeRequestTimeout: 90 * time.Second,
		ParallelImagePulls:    4,
	}}
	var got map[string]any
	if err := yaml.Unmarshal([]byte(c.kubeletConfig(10999)), &got); err != nil {
		t.Fatalf("kubeletConfig: %v", err)
	}
	for key, want := range map[string]any{
		"containerRuntimeEndpoint": "unix:///tmp/sg/cri.sock",
		"address":                  "192.0.2.7",
		"port":                     float64(10999),
		"readOnlyPort":             float64(0),
		"cgroupDriver":             "cgroupfs",
		"cgroupsPerQOS":            false,
		"failSwapOn":               false,
		"staticPodPath":            "/tmp/sgk-1/manifests",
		"podLogsDir":               "/tmp/sgk-1/pod-logs",
		"runtimeRequestTimeout":    "1m30s",
		"rotateCertificates":       false,
		"serializeImagePulls":      false,
		"maxParallelImagePulls":    float64(4),
	} {
		if got[key] != want {
			t.Errorf("%s: got %#v, want %#v", key, got[key], want)
		}
	}
	ev, _ := got["evictionHard"].(map[string]any)
	if ev["nodefs.available"] != "1%" || ev["memory.available"] != "100Mi" {
		t.Errorf("evictionHard: got %v, want nodefs.available 1%%, memory.available 100Mi", ev)
	}
	fg, _ := got["featureGates"].(map[string]any)
	if fg["EventedPLEG"] != true || fg["AAA"] != false || len(fg) != 2 {
		t.Errorf("featureGates: got %v, want EventedPLEG true, AAA false", fg)
	}
	if err := c.SetKubelet(KubeletSettings{RuntimeEndpoint: "/run/containerd/containerd.sock"}); err != nil {
		t.Fatalf("SetKubelet with no kubelet running: %v", err)
	}
	var again map[string]any
	if err := yaml.Unmarshal([]byte(c.kubeletConfig(10999)), &again); err != nil {
		t.Fatalf("kubeletConfig: %v", err)
	}
	if again["containerRuntimeEndpoint"] != "unix:///run/containerd/containerd.sock" || again["serializeImagePulls"] != nil {
		t.Errorf("after SetKubelet: endpoint %v, serializeImagePulls %v; want containerd's socket and kubelet's default", again["containerRuntimeEndpoint"], again["serializeImagePulls"])
	}
	if err := c.SetKubelet(KubeletSettings{}); err == nil {
		t.Errorf("SetKubelet with no endpoint: got no error")
	}
	auth, _ := got["authentication"].(map[string]any)
	x509, _ := auth["x509"].(map[string]any)
	if x509["clientCAFile"] != "/tmp/sgk-1/pki/ca.crt" {
		t.Errorf("authentication.x509.clientCAFile: got %v, want the cluster CA", x509["clientCAFile"])
	}
}

func TestModuleHelpers(t *testing.T) {
	dir := t.TempDir()
	sub := filepath.Join(dir, "a", "b")
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("// c\nmodule example.com/m\n\ngo 1.26\n\nrequire k8s.io/kubernetes v1.34.4\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if root, ok := findModule(sub, "example.com/m"); !ok || root != dir {
		t.Errorf("findModule(%s): got %q, %v, want %q", sub, root, ok, dir)
	}
	if root, ok := findModule(sub, "example.com/other"); ok {
		t.Errorf("findModule(other): got %q, want none", root)
	}
	if v, err := kubeVersion(filepath.Join(dir, "go.mod")); err != nil || v != "v1.34.4" {
		t.Errorf("kubeVersion: got %q, %v, want v1.34.4", v, err)
	}
	// The real wrapper module, found from this package's source.
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kubeVersion(filepath.Join(root, "hack", "kubernetes", "go.mod")); err != nil {
		t.Errorf("kubeVersion of hack/kubernetes: %v", err)
	}
}

func TestBinEnv(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(BinEnv, dir)
	if _, err := CachedBinaries(); err == nil {
		t.Fatalf("%s=%s (empty): got no error, want the missing kubelet", BinEnv, dir)
	}
	for _, c := range Commands {
		if err := os.WriteFile(filepath.Join(dir, c), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := CachedBinaries(); err != nil || got != dir {
		t.Errorf("CachedBinaries: got %q, %v, want %q", got, err, dir)
	}
}
