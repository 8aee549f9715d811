package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/startgate/startgate/harness/testbed"
)

// nodeReported succeeds once the node exists and one of its conditions
// has a heartbeat at or after since: the kubelet started then has talked
// to the apiserver. (A node object from before a restart stays Ready for
// the node monitor's grace period, whoever is behind it.)
func (c *Cluster) nodeReported(ctx context.Context, since time.Time) error {
	node, err := c.client.CoreV1().Nodes().Get(ctx, c.nodeName, metav1.GetOptions{})
	if err != nil {
		return err
	}
	for _, cond := range node.Status.Conditions {
		if !cond.LastHeartbeatTime.Time.Before(since) {
			return nil
		}
	}
	return fmt.Errorf("node %s: no status from the kubelet started at %s yet", c.nodeName, since.Format(time.RFC3339))
}

// WaitNodeReady waits until the node is Ready according to the kubelet
// last started (a heartbeat since its start) and has no taints. The
// not-ready taint goes once the node lifecycle controller sees the Ready
// node; any other taint still there a minute after Ready is removed, so
// the node takes every pod (nothing else here would ever clear it).
func (c *Cluster) WaitNodeReady(ctx context.Context) error {
	c.kubeletMu.Lock()
	since, kubelet := c.kubeletStarted, c.kubelet
	c.kubeletMu.Unlock()
	if kubelet == nil {
		return fmt.Errorf("cluster: no kubelet started")
	}
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	var readySince time.Time
	var last error
	for {
		last = func() error {
			callCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			node, err := c.client.CoreV1().Nodes().Get(callCtx, c.nodeName, metav1.GetOptions{})
			if err != nil {
				return err
			}
			ready := readyCondition(node)
			if ready == nil || ready.Status != corev1.ConditionTrue || ready.LastHeartbeatTime.Time.Before(since) {
				readySince = time.Time{}
				if ready != nil {
					return fmt.Errorf("node %s: Ready=%s (%s: %s), heartbeat %s", c.nodeName, ready.Status, ready.Reason, ready.Message, ready.LastHeartbeatTime.Format(time.RFC3339))
				}
				return fmt.Errorf("node %s: no Ready condition", c.nodeName)
			}
			if len(node.Spec.Taints) == 0 {
				return nil
			}
			if readySince.IsZero() {
				readySince = time.Now()
			}
			if time.Since(readySince) > time.Minute {
				if err := c.untaint(callCtx); err != nil {
					return err
				}
			}
			return fmt.Errorf("node %s: Ready but tainted %v", c.nodeName, node.Spec.Taints)
		}()
		if last == nil {
			return nil
		}
		select {
		case <-kubelet.exited:
			return kubelet.withLog(fmt.Errorf("cluster: kubelet exited (%s): %w", kubelet.cmd.ProcessState, last))
		case <-ctx.Done():
			return fmt.Errorf("cluster: node not ready: %w (last: %w)", ctx.Err(), last)
		case <-tick.C:
		}
	}
}

func readyCondition(node *corev1.Node) *corev1.NodeCondition {
	for i := range node.Status.Conditions {
		if node.Status.Conditions[i].Type == corev1.NodeReady {
			return &node.Status.Conditions[i]
		}
	}
	return nil
}

// untaint removes every taint from the node.
func (c *Cluster) untaint(ctx context.Context) error {
	patch, _ := json.Marshal(map[string]any{"spec": map[string]any{"taints": nil}})
	_, err := c.client.CoreV1().Nodes().Patch(ctx, c.nodeName, types.StrategicMergePatchType, patch, metav1.PatchOptions{})
	return err
}

// waitServiceAccount waits for the default namespace's service account,
// which the controller-manager creates: the ServiceAccount admission
// plugin refuses pods until it exists.
func (c *Cluster) waitServiceAccount(ctx context.Context) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		_, err := c.client.CoreV1().ServiceAccounts(metav1.NamespaceDefault).Get(ctx, "default", metav1.GetOptions{})
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return testbed.WithLogTail(fmt.Errorf("cluster: no default service account: %w (last: %w)", ctx.Err(), err), c.LogPath(ControllerManager))
		case <-tick.C:
		}
	}
}
