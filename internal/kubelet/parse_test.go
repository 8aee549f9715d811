package kubelet

import (
	"reflect"
	"testing"
)

func TestParseEnvFile(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want map[string]string
	}{
		{"A=1\nB=two words  \n", map[string]string{"A": "1", "B": "two words"}},
		{"# c\n; c\n  A = x\n", map[string]string{"A": "x"}},
		{`A="--x=1 --y=\"2\""` + "\n", map[string]string{"A": `--x=1 --y="2"`}},
		{"A='it''s'\n", map[string]string{"A": "its"}},
		{"A=one \\\n two\n", map[string]string{"A": "one  two"}},
		{"A=1\nA=2\n", map[string]string{"A": "2"}},
		{"export A=1\n1B=2\nnoequals\nC=#not a comment\n", map[string]string{"C": "#not a comment"}},
		{"KUBELET_KUBEADM_ARGS=\"--container-runtime-endpoint=unix:///run/containerd/containerd.sock --pod-infra-container-image=registry.k8s.io/pause:3.9\"", map[string]string{"KUBELET_KUBEADM_ARGS": "--container-runtime-endpoint=unix:///run/containerd/containerd.sock --pod-infra-container-image=registry.k8s.io/pause:3.9"}},
	} {
		if got := parseEnvFile([]byte(tc.in)); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("parseEnvFile(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestExecArgs(t *testing.T) {
	env := map[string]envValue{
		"ARGS":  {"--a=1 \"--b=two words\"", "/etc/default/kubelet"},
		"EMPTY": {"", "/etc/default/kubelet"},
		"EP":    {"unix:///x.sock", "/etc/env"},
	}
	for _, tc := range []struct {
		line string
		want []string
	}{
		{"/usr/bin/kubelet $ARGS $EMPTY $UNSET", []string{"/usr/bin/kubelet", "--a=1", "--b=two words"}},
		{"-/usr/bin/kubelet --container-runtime-endpoint=${EP} '$ARGS'", []string{"/usr/bin/kubelet", "--container-runtime-endpoint=unix:///x.sock", "--a=1", "--b=two words"}},
		{":/usr/bin/kubelet $ARGS", []string{"/usr/bin/kubelet", "$ARGS"}},
		{`/usr/bin/kubelet "--node-labels=a=b,c=d" --v=2`, []string{"/usr/bin/kubelet", "--node-labels=a=b,c=d", "--v=2"}},
	} {
		args, err := execArgs(tc.line, "/unit", env)
		if err != nil {
			t.Fatalf("execArgs(%q): %v", tc.line, err)
		}
		var got []string
		for _, a := range args {
			got = append(got, a.Value)
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("execArgs(%q) = %q, want %q", tc.line, got, tc.want)
		}
	}
	if _, err := execArgs(`/usr/bin/kubelet "--x`, "/unit", env); err == nil {
		t.Error("an unterminated quote parsed")
	}
}

func TestParseKubeletFlags(t *testing.T) {
	args := []Arg{{Value: "--v=2"}, {Value: "--container_runtime_endpoint", File: "a"}, {Value: "unix:///one"}, {Value: "--node-labels"}, {Value: "x=y"}, {Value: "--container-runtime-endpoint=unix:///two", File: "b"}, {Value: "--config"}, {Value: "/c.yaml"}}
	kf, err := parseKubeletFlags(args)
	if err != nil {
		t.Fatal(err)
	}
	if kf.values[flagEndpoint] != "unix:///two" || kf.values[flagConfig] != "/c.yaml" {
		t.Errorf("values %v", kf.values)
	}
	if !reflect.DeepEqual(kf.endpointArgs, []int{2, 5}) {
		t.Errorf("endpoint args %v, want [2 5]", kf.endpointArgs)
	}
}

func TestSetConfigValueJSONInsert(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"{\n    \"kind\": \"KubeletConfiguration\"\n}\n", "{\n    \"containerRuntimeEndpoint\": \"unix:///s\",\n    \"kind\": \"KubeletConfiguration\"\n}\n"},
		{`{"kind":"KubeletConfiguration"}`, `{"containerRuntimeEndpoint": "unix:///s", "kind":"KubeletConfiguration"}`},
		{"kind: KubeletConfiguration", "kind: KubeletConfiguration\ncontainerRuntimeEndpoint: unix:///s\n"},
		{"containerRuntimeEndpoint: 'unix:///old'\n", "containerRuntimeEndpoint: 'unix:///s'\n"},
	} {
		got, err := setConfigValue([]byte(tc.in), "f", "unix:///s")
		if err != nil || string(got) != tc.want {
			t.Errorf("setConfigValue(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	if _, err := setConfigValue([]byte("containerRuntimeEndpoint: |\n  unix:///x\n"), "f", "unix:///s"); err == nil {
		t.Error("a block scalar was edited")
	}
}
