// Package pressure turns Linux pressure stall information (PSI) into the
// signal the admission controller sizes its limits from.
//
// A Source reads the cumulative "some" stall counters (microseconds) of the
// cpu, io and memory resources: ProcSource from /proc/pressure through
// github.com/prometheus/procfs, CgroupSource from a cgroup v2 directory's
// cpu.pressure, io.pressure and memory.pressure. A Sampler turns two
// readings into the stall fraction over the interval between them and
// smooths it with an exponentially weighted moving average. The kernel's
// avg10 is a ten-second average and lags a burst of container starts by
// seconds; the counter delta reacts within one sample interval.
//
// Kernels without PSI (older than 4.20, CONFIG_PSI off, booted with psi=0)
// make every Source return ErrUnavailable; the admission controller then
// logs once and keeps static limits. A single resource missing (some
// kernels have no memory file in a cgroup) is reported as unavailable for
// that resource only.
package pressure
