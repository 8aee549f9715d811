package config

import (
	"path/filepath"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
)

// Kubernetes is the [kubernetes] section: startgated's watch of the pods
// bound to its node. It is an addition: without it, or while the API
// server is unreachable, everything works from the CRI alone.
type Kubernetes struct {
	// Enabled runs the pod watch (with the CRI proxy: it acts on the
	// starts the proxy gates).
	Enabled bool `toml:"enabled"`
	// Kubeconfig is the credentials file; "" means the in-cluster service
	// account. kubelet's own kubeconfig is enough: the Node authorizer
	// lets a node list and watch the pods bound to it.
	Kubeconfig string `toml:"kubeconfig"`
	// NodeName is the node's name as kubelet registered it; "" means
	// $NODE_NAME, else the host name in lower case (kubelet's default).
	NodeName string `toml:"node_name"`
	// EventAfter: a start that has waited this long in the gate gets a
	// Kubernetes Event on its pod saying why (criproxy/held.go); 0 is off.
	EventAfter Duration `toml:"event_after"`
}

func defaultKubernetes() Kubernetes {
	return Kubernetes{Enabled: false, Kubeconfig: "/etc/kubernetes/kubelet.conf", EventAfter: Duration(20 * time.Second)}
}

var kubernetesDocs = map[string]string{
	"kubernetes": "Watch the pods bound to this node (one watch, field selector spec.nodeName):\n" +
		"a queued start of a deleted pod leaves the gate, and a pod with a readiness or\n" +
		"startup probe holds its slot until it reports Ready. Without API access\n" +
		"everything works from the CRI alone.",
	"kubernetes.enabled": "Run the pod watch (it acts on the starts the CRI proxy gates).",
	"kubernetes.kubeconfig": "Credentials: a kubeconfig file (kubelet's own is enough: the Node authorizer\n" +
		"lets a node watch its pods), or \"\" for the in-cluster service account.",
	"kubernetes.node_name": "This node's name as kubelet registered it; \"\" means $NODE_NAME, else the\n" +
		"host name in lower case (kubelet's default).",
	"kubernetes.event_after": "A start that has waited this long in the gate gets an Event on its pod\n" +
		"(reason StartgateWaiting: its class, place in the queue, the limit and why),\n" +
		"so kubectl describe pod says why it is not starting; again at most once a\n" +
		"minute while it waits. \"0s\" is off.",
}

// validate checks the [kubernetes] section whether or not it is enabled.
// A kubeconfig that does not exist yet is not an error here: kubelet may
// write it after startgated starts, and the watch is never a reason not
// to start.
func (k Kubernetes) validate() []error {
	var errs problems
	if k.Kubeconfig != "" && !filepath.IsAbs(k.Kubeconfig) {
		errs.add("kubernetes.kubeconfig", "%q must be an absolute path (or \"\" for in-cluster credentials)", k.Kubeconfig)
	}
	if k.EventAfter != 0 {
		errs.duration("kubernetes.event_after", k.EventAfter, time.Second, time.Hour)
	}
	if k.NodeName != "" {
		if msgs := validation.IsDNS1123Subdomain(k.NodeName); len(msgs) > 0 {
			errs.add("kubernetes.node_name", "%q is not a node name: %s", k.NodeName, strings.Join(msgs, "; "))
		}
	}
	return errs
}
