package criproxy

import (
	"fmt"
	"strings"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/startgate/startgate/internal/admission"
)

// Rule maps pods to a class. Every set field must match; the first rule
// that matches wins.
type Rule struct {
	// Namespace matches the pod's namespace exactly.
	Namespace string
	// Label and Annotation match "key" (present) or "key=value".
	Label      string
	Annotation string
	// Static matches static and mirror pods: annotation
	// kubernetes.io/config.source present and other than "api".
	Static bool
	Class  admission.Class
}

// Classifier picks a start's class from its pod's sandbox config.
type Classifier struct {
	// ClassAnnotation, when present on the pod, names its class and
	// overrides the rules.
	ClassAnnotation string
	Rules           []Rule
	Default         admission.Class
}

const configSourceAnnotation = "kubernetes.io/config.source"

// DefaultClassifier: startgate.io/class picks any class; static and mirror
// pods and kube-system bypass the gate; DaemonSet pods (the
// pod-template-generation label only the DaemonSet controller sets) are
// high; the rest normal.
func DefaultClassifier() *Classifier {
	return &Classifier{
		ClassAnnotation: "startgate.io/class",
		Rules: []Rule{
			{Static: true, Class: admission.Critical},
			{Namespace: "kube-system", Class: admission.Critical},
			{Label: "pod-template-generation", Class: admission.High},
		},
		Default: admission.Normal,
	}
}

// Classify returns the class and tenant (the namespace) of a pod's start,
// and why the class was chosen, for logs.
func (c *Classifier) Classify(sb *runtimeapi.PodSandboxConfig) (cls admission.Class, tenant, why string) {
	md := sb.GetMetadata()
	tenant = md.GetNamespace()
	ann := sb.GetAnnotations()
	if c.ClassAnnotation != "" {
		if v, ok := ann[c.ClassAnnotation]; ok {
			if k, err := admission.ParseClass(v); err == nil {
				return k, tenant, "annotation " + c.ClassAnnotation
			}
			// A bad annotation must not block the pod: fall through to
			// the rules.
		}
	}
	for i, r := range c.Rules {
		if r.matches(md, sb.GetLabels(), ann) {
			return r.Class, tenant, fmt.Sprintf("rule %d", i+1)
		}
	}
	return c.Default, tenant, "default"
}

func (r Rule) matches(md *runtimeapi.PodSandboxMetadata, labels, ann map[string]string) bool {
	if r.Namespace != "" && md.GetNamespace() != r.Namespace {
		return false
	}
	if r.Label != "" && !kvMatch(r.Label, labels) {
		return false
	}
	if r.Annotation != "" && !kvMatch(r.Annotation, ann) {
		return false
	}
	if r.Static {
		src, ok := ann[configSourceAnnotation]
		if !ok || src == "api" {
			return false
		}
	}
	return r.Namespace != "" || r.Label != "" || r.Annotation != "" || r.Static
}

func kvMatch(sel string, m map[string]string) bool {
	k, v, hasValue := strings.Cut(sel, "=")
	got, ok := m[k]
	return ok && (!hasValue || got == v)
}

// Validate checks the rules: each must match on something.
func (c *Classifier) Validate() error {
	for i, r := range c.Rules {
		if r.Namespace == "" && r.Label == "" && r.Annotation == "" && !r.Static {
			return fmt.Errorf("criproxy: rule %d matches nothing: set namespace, label, annotation or static", i+1)
		}
		if !r.Class.Valid() {
			return fmt.Errorf("criproxy: rule %d: invalid class %d", i+1, r.Class)
		}
	}
	return nil
}
