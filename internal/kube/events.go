package kube

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"
)

// Events go through client-go's recorder, as kubelet's do: its
// broadcaster queues them without blocking the caller (dropping when
// 1000 wait), and its correlator rate-limits per object and folds
// similar ones into one with a count, so a burst of held starts cannot
// flood the API server. On a kubeadm node kubelet's own credentials may
// post them: the Node authorizer lets a node create and patch events.

// startEvents starts the recorder on client; the func stops it.
func (p *Pods) startEvents(client kubernetes.Interface) func() {
	bc := record.NewBroadcaster()
	bc.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	var rec record.EventRecorder = bc.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "startgated", Host: p.cfg.NodeName})
	p.recorder.Store(&rec)
	return func() {
		p.recorder.Store(nil)
		bc.Shutdown()
	}
}

// PodEvent posts a Normal Event about a pod of this node, to be read with
// kubectl describe pod; it never blocks, and before the API client exists
// (or after Run) the Event is dropped. It implements criproxy.EventSink.
func (p *Pods) PodEvent(namespace, name, uid, reason, message string) {
	r := p.recorder.Load()
	if r == nil {
		return
	}
	ref := &corev1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: namespace, Name: name, UID: types.UID(uid)}
	(*r).Event(ref, corev1.EventTypeNormal, reason, message)
}
