package criproxy

import (
	"fmt"
	"slices"
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
	// CriticalNamespaces are the namespaces whose pods the annotation may
	// make critical. Critical skips the gate, so any pod author who could
	// pick it would skip it; elsewhere the annotation's critical is not
	// honoured and the rules pick the class. Lower classes are anyone's
	// to pick.
	CriticalNamespaces []string
	Rules              []Rule
	Default            admission.Class
}

// Classification is a pod's class and tenant, and why.
type Classification struct {
	Class admission.Class
	// Tenant is the pod's namespace (fairness within a class).
	Tenant string
	// Why names what chose the class (for logs): the annotation, a rule
	// ("rule 2") or "default".
	Why string
	// Refused, when set, says that the pod asked for a class it may not
	// have (critical outside CriticalNamespaces) and the rules decided.
	Refused string
}

const configSourceAnnotation = "kubernetes.io/config.source"

// DefaultClassifier: startgate.io/class picks any class but critical,
// which it picks in kube-system only; static and mirror pods and
// kube-system bypass the gate; DaemonSet pods (the pod-template-generation
// label only the DaemonSet controller sets) are high; the rest normal.
func DefaultClassifier() *Classifier {
	return &Classifier{
		ClassAnnotation:    "startgate.io/class",
		CriticalNamespaces: []string{"kube-system"},
		Rules: []Rule{
			{Static: true, Class: admission.Critical},
			{Namespace: "kube-system", Class: admission.Critical},
			{Label: "pod-template-generation", Class: admission.High},
		},
		Default: admission.Normal,
	}
}

// Classify returns the class and tenant (the namespace) of a pod's start,
// and why the class was chosen.
func (c *Classifier) Classify(sb *runtimeapi.PodSandboxConfig) Classification {
	md := sb.GetMetadata()
	out := Classification{Tenant: md.GetNamespace()}
	ann := sb.GetAnnotations()
	if c.ClassAnnotation != "" {
		if v, ok := ann[c.ClassAnnotation]; ok {
			k, err := admission.ParseClass(v)
			switch {
			case err != nil:
				// A bad annotation must not block the pod: the rules
				// decide.
			case k == admission.Critical && !slices.Contains(c.CriticalNamespaces, md.GetNamespace()):
				out.Refused = fmt.Sprintf("annotation %s=%s is honoured only in namespaces %v (cri.critical_annotation_namespaces)",
					c.ClassAnnotation, v, c.CriticalNamespaces)
			default:
				out.Class, out.Why = k, "annotation "+c.ClassAnnotation
				return out
			}
		}
	}
	for i, r := range c.Rules {
		if r.matches(md, sb.GetLabels(), ann) {
			out.Class, out.Why = r.Class, fmt.Sprintf("rule %d", i+1)
			return out
		}
	}
	out.Class, out.Why = c.Default, "default"
	return out
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
