package daemon

import (
	"context"
	"sync"

	"github.com/go-logr/zapr"
	"go.uber.org/zap"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/startgate/startgate/internal/config"
	"github.com/startgate/startgate/internal/criproxy"
	"github.com/startgate/startgate/internal/kube"
	"github.com/startgate/startgate/internal/version"
)

// newPods builds the pod watch when [kubernetes] is enabled. It never
// stops startgated from starting: the watch is an addition.
func newPods(cfg *config.Config, log *zap.Logger) *kube.Pods {
	k := cfg.Kubernetes
	if !k.Enabled {
		return nil
	}
	log = log.Named("kube")
	// client-go logs through klog; route it to ours.
	klog.SetLogger(zapr.NewLogger(log.Named("client-go")))
	node := k.NodeName
	if node == "" {
		node = kube.DefaultNodeName()
	}
	// The client is made by the watch, and made again until it can be:
	// kubelet's kubeconfig may be written after startgated starts.
	pods, err := kube.New(kube.Config{NodeName: node, Logger: log, NewClient: func() (kubernetes.Interface, error) {
		return kube.NewClient(k.Kubeconfig, "startgated/"+version.Version)
	}})
	if err != nil {
		log.Error("no pod watch: starts are gated from the CRI alone", zap.Error(err))
		return nil
	}
	log.Info("watching this node's pods", zap.String("node", node), zap.String("kubeconfig", k.Kubeconfig))
	return pods
}

// startPods runs the watch beside the servers, telling the proxy.
func startPods(ctx context.Context, wg *sync.WaitGroup, pods *kube.Pods, proxy *criproxy.Proxy) {
	wg.Go(func() { _ = pods.Run(ctx, proxy) })
}
