package criproxy

import (
	"slices"
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/startgate/startgate/internal/admission"
)

// fuzzPod builds a sandbox config from fuzzed parts: "k=v" pairs split on
// newlines become labels and annotations.
func fuzzPod(ns, uid, labels, annotations string) *runtimeapi.PodSandboxConfig {
	kv := func(s string) map[string]string {
		m := map[string]string{}
		for _, line := range strings.Split(s, "\n") {
			k, v, _ := strings.Cut(line, "=")
			m[k] = v
		}
		return m
	}
	return &runtimeapi.PodSandboxConfig{
		Metadata:    &runtimeapi.PodSandboxMetadata{Namespace: ns, Name: "p", Uid: uid},
		Labels:      kv(labels),
		Annotations: kv(annotations),
	}
}

// FuzzClassify: whatever metadata a pod carries, its class is a valid one,
// its tenant is its namespace, the annotation makes it critical only in an
// allowed namespace, and pulls for pods of two namespaces never share a
// resolution.
func FuzzClassify(f *testing.F) {
	f.Add("default", "u1", "app=web\npod-template-hash=abc", "startgate.io/class=critical", "kube-system", "u2", "pod-template-hash=abc", "")
	f.Add("kube-system", "", "", "startgate.io/class=LOW", "default", "", "io.kubernetes.pod.namespace=kube-system\nio.kubernetes.pod.uid=x", "kubernetes.io/config.source=file")
	f.Add("a", "u", "controller-uid=j", "", `a"/controller-uid=j`, "", "", "")
	f.Add("", "", "pod-template-generation=3", "startgate.io/class=background", "x", "y", "", "startgate.io/class=")
	c := DefaultClassifier()
	f.Fuzz(func(t *testing.T, ns1, uid1, labels1, ann1, ns2, uid2, labels2, ann2 string) {
		p1, p2 := fuzzPod(ns1, uid1, labels1, ann1), fuzzPod(ns2, uid2, labels2, ann2)
		for _, p := range []*runtimeapi.PodSandboxConfig{p1, p2} {
			got := c.Classify(p)
			if !got.Class.Valid() {
				t.Fatalf("Classify = %+v, not a valid class", got)
			}
			if got.Tenant != p.Metadata.Namespace {
				t.Fatalf("tenant %q, want the namespace %q", got.Tenant, p.Metadata.Namespace)
			}
			if got.Class == admission.Critical && strings.HasPrefix(got.Why, "annotation") && !slices.Contains(c.CriticalNamespaces, got.Tenant) {
				t.Fatalf("critical by annotation in namespace %q", got.Tenant)
			}
			g1, ok1 := pullGeneration(p)
			g2, ok2 := pullGeneration(p)
			if g1 != g2 || ok1 != ok2 {
				t.Fatalf("pullGeneration not deterministic: %q %v, %q %v", g1, ok1, g2, ok2)
			}
		}
		g1, ok1 := pullGeneration(p1)
		g2, ok2 := pullGeneration(p2)
		nsOf := func(p *runtimeapi.PodSandboxConfig) string {
			if p.Metadata.Namespace != "" {
				return p.Metadata.Namespace
			}
			return p.Labels[kubeNamespaceLabel]
		}
		if ok1 && ok2 && g1 == g2 && nsOf(p1) != nsOf(p2) {
			t.Fatalf("pods of namespaces %q and %q share the generation %q", nsOf(p1), nsOf(p2), g1)
		}
	})
}
