package kube

import (
	"fmt"
	"os"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// NewClient returns a clientset from a kubeconfig file, or from the
// in-cluster service account when kubeconfig is "". On a node, kubelet's
// own kubeconfig (/etc/kubernetes/kubelet.conf on kubeadm nodes) is the
// natural choice: the Node authorizer lets a node list and watch the pods
// bound to it, which is all startgated reads.
func NewClient(kubeconfig, userAgent string) (kubernetes.Interface, error) {
	cfg, err := RESTConfig(kubeconfig, userAgent)
	if err != nil {
		return nil, err
	}
	return kubernetes.NewForConfig(cfg)
}

// RESTConfig is NewClient's configuration, for the other clients of the
// same credentials (the fleet's dynamic client).
func RESTConfig(kubeconfig, userAgent string) (*rest.Config, error) {
	var cfg *rest.Config
	var err error
	if kubeconfig == "" {
		cfg, err = rest.InClusterConfig()
	} else {
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	}
	if err != nil {
		return nil, fmt.Errorf("kube: %w", err)
	}
	cfg.UserAgent = userAgent
	// A few lists and watches per node; the defaults (5 qps, burst 10)
	// are plenty, and a request that hangs must not hold an informer.
	cfg.Timeout = 30 * time.Second
	return cfg, nil
}

// DefaultNodeName is the name kubelet registers a node under when it is
// given none: the host name, lower-cased. NODE_NAME, when set (a
// DaemonSet's downward API), wins.
func DefaultNodeName() string {
	if n := os.Getenv("NODE_NAME"); n != "" {
		return n
	}
	h, err := os.Hostname()
	if err != nil {
		return ""
	}
	return strings.ToLower(h)
}
