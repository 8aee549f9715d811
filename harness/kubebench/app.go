package kubebench

import (
	"fmt"
	"time"

	"github.com/startgate/startgate/harness/bench"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// The app's names.
const (
	// AppRepoTag is the app image's repository and tag in the registry.
	AppRepoTag = "startgate/kubebench-app:1"
	appName    = "bench-app"
	appPort    = 8080
)

// Workload kinds: cpu, io and mixed as startgate-bench's (the tuning
// set: the defaults were chosen on them); files and jit are held out,
// never tuned on.
const (
	WorkCPU   = "cpu"
	WorkIO    = "io"
	WorkMixed = "mixed"
	// WorkFiles: the patch is a tree of small files (filesSize each, the
	// patch's size in all) that init opens and reads one by one, as an
	// interpreter imports its modules.
	WorkFiles = "files"
	// WorkJIT: init's CPU time is spent by as many busy loops at once as
	// the node has cores, as a JIT's compiler threads burst at start.
	WorkJIT = "jit"
)

// filesSize is a files pod's module size: most of a Python or Node
// library tree is files of a few KiB.
const filesSize = 4 << 10

// newApp builds the app for o's workload: its patch a tree of filesSize
// files for WorkFiles, one file otherwise.
func newApp(o *Options) (*bench.App, error) {
	files := 1
	if o.Workload == WorkFiles {
		files = max(1, o.PatchSize/filesSize)
	}
	return bench.NewFilesApp(o.PatchSize, files)
}

// cpuSlice is how many loop turns run between two reads of the cgroup's
// CPU counter: a few milliseconds of CPU, so a pod overshoots its init
// CPU time by that much at most.
const cpuSlice = 5000

// cpuInit is a busy shell loop (busybox ash: `[` and $((...)) are
// builtins, `read` too, so nothing forks) until the container's cgroup
// has used cpu of CPU time: cgroup v1's cpuacct.usage (nanoseconds), or
// v2's cpu.stat usage_usec. The kernel's count does not stretch with
// contention, so every mode does the same work and nothing needs
// calibrating.
func cpuInit(cpu time.Duration) string {
	ns, us := cpu.Nanoseconds(), cpu.Microseconds()
	spin := fmt.Sprintf(`i=0; while [ $i -lt %d ]; do i=$((i+1)); done`, cpuSlice)
	return fmt.Sprintf(`f=/sys/fs/cgroup/cpuacct/cpuacct.usage; [ -r $f ] || f=/sys/fs/cgroup/cpu,cpuacct/cpuacct.usage; `+
		`if [ -r $f ]; then while read u < $f; [ $u -lt %d ]; do %s; done; `+
		`elif [ -r /sys/fs/cgroup/cpu.stat ]; then u=0; while [ $u -lt %d ]; do %s; while read k v; do [ $k = usage_usec ] && u=$v; done < /sys/fs/cgroup/cpu.stat; done; `+
		`else echo "no cgroup CPU counter" >&2; exit 1; fi`, ns, spin, us, spin)
}

// ioInit writes size bytes to a file in the container's writable layer
// (overlayfs upper, on the node's disk), fsyncs it and reads it back
// bypassing the page cache, as an init that loads a cache or a database.
func ioInit(size int64) string {
	const block = 64 << 10
	blocks := max(1, (size+block-1)/block)
	return fmt.Sprintf(`dd if=/dev/zero of=/sgbench.io bs=%d count=%d conv=fsync 2>/dev/null; `+
		`dd if=/sgbench.io of=/dev/null bs=%d iflag=direct 2>/dev/null || cat /sgbench.io >/dev/null`, block, blocks, block)
}

// initScript is the container's command: the init work, then an HTTP
// server the readiness probe reaches. Mixed pods pick their half from the
// pod name's last character (random, from the ReplicaSet's alphabet).
func initScript(kind string, cpu time.Duration, ioBytes int64) string {
	var work string
	switch kind {
	case WorkIO:
		work = ioInit(ioBytes)
	case WorkMixed:
		work = fmt.Sprintf(`case $(hostname) in *[bdgjlnqsvx2579]) %s ;; *) %s ;; esac`, cpuInit(cpu), ioInit(ioBytes))
	case WorkFiles:
		// busybox find batches the files into cat's argument lists.
		work = `find /` + bench.PatchDir + ` -type f -exec cat {} + >/dev/null`
	case WorkJIT:
		work = fmt.Sprintf(`n=$(nproc); while [ $n -gt 0 ]; do ( %s ) & n=$((n-1)); done; wait`, cpuInit(cpu))
	default:
		work = cpuInit(cpu)
	}
	return work + `; mkdir -p /tmp/www && echo ok > /tmp/www/ready && exec httpd -f -p ` + fmt.Sprint(appPort) + ` -h /tmp/www`
}

// deployment is the app: replicas pods of image on node (required node
// affinity on its name, as a DaemonSet's pods have: scheduled as any pod
// is, on that node only), Recreate strategy (the rolling scenario
// switches it), a readiness probe every probePeriod.
func deployment(ns, node, image string, replicas int32, script string, probePeriod time.Duration) *appsv1.Deployment {
	labels := map[string]string{"app": appName}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: appName, Namespace: ns, Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Strategy: appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType},
			// Keep no old ReplicaSets around: each rollout is a new one.
			RevisionHistoryLimit: ptr.To[int32](1),
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					Affinity: &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
						RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
							MatchFields: []corev1.NodeSelectorRequirement{{Key: "metadata.name", Operator: corev1.NodeSelectorOpIn, Values: []string{node}}},
						}}},
					}},
					// No cluster DNS here; the probe comes from the
					// kubelet over the bridge.
					DNSPolicy:                     corev1.DNSDefault,
					EnableServiceLinks:            ptr.To(false),
					TerminationGracePeriodSeconds: ptr.To[int64](1),
					Containers: []corev1.Container{{
						Name:            "app",
						Image:           image,
						ImagePullPolicy: corev1.PullAlways,
						Command:         []string{"sh", "-c", script},
						ReadinessProbe: &corev1.Probe{
							ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
								Path: "/ready", Port: intstr.FromInt32(appPort),
							}},
							PeriodSeconds:    int32(probePeriod / time.Second),
							FailureThreshold: 1,
						},
					}},
				},
			},
		},
	}
}

// startupProbe is the readiness probe as a startup probe, allowed the
// scenario's whole deadline to pass.
func startupProbe(readiness *corev1.Probe) *corev1.Probe {
	p := readiness.DeepCopy()
	p.FailureThreshold = int32(DefaultDeadline/time.Second) / max(1, p.PeriodSeconds)
	return p
}

// rollingUpdate is the default RollingUpdate strategy: 25% surge, 25%
// unavailable.
func rollingUpdate() appsv1.DeploymentStrategy {
	q := intstr.FromString("25%")
	return appsv1.DeploymentStrategy{
		Type:          appsv1.RollingUpdateDeploymentStrategyType,
		RollingUpdate: &appsv1.RollingUpdateDeployment{MaxSurge: &q, MaxUnavailable: &q},
	}
}
