package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/startgate/startgate/internal/version"
)

// RegisterProcess adds what every Go daemon on a node exports, as
// containerd and kubelet do: the Go runtime's go_* series, the process's
// process_* (CPU, memory, open fds, start time), and
// startgate_build_info, a constant 1 labelled with the build.
func RegisterProcess(reg prometheus.Registerer) {
	v := version.Get()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: namespace, Name: "build_info",
			Help:        "A constant 1 labelled with the running build: version, VCS revision, Go version.",
			ConstLabels: prometheus.Labels{"version": v.Version, "revision": v.Revision, "goversion": v.GoVersion},
		}, func() float64 { return 1 }),
	)
}
