package daemon

import (
	"context"
	"sync"

	"github.com/go-logr/zapr"
	"go.uber.org/zap"
	"k8s.io/klog/v2"

	"github.com/startgate/startgate/internal/config"
	"github.com/startgate/startgate/internal/criproxy"
	"github.com/startgate/startgate/internal/kube"
)

// newPods builds the pod watch when [kubernetes] is enabled. Without a
// usable client it logs why and returns nil: the watch is an addition,
// never a reason for startgated not to start.
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
	client, err := kube.NewClient(k.Kubeconfig, "startgated/"+Version)
	if err != nil {
		log.Error("no API access: starts are gated from the CRI alone", zap.String("kubeconfig", k.Kubeconfig), zap.Error(err))
		return nil
	}
	pods, err := kube.New(kube.Config{Client: client, NodeName: node, Logger: log})
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
