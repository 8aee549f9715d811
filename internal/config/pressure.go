package config

import "time"

// Pressure is the [pressure] section.
type Pressure struct {
	// Source is proc (system-wide /proc/pressure) or cgroup (a cgroup v2
	// directory's *.pressure files, CgroupDir).
	Source    string   `toml:"source"`
	ProcRoot  string   `toml:"proc_root"`
	CgroupDir string   `toml:"cgroup_dir"`
	Interval  Duration `toml:"interval"`
	// Smoothing is the EWMA weight of the newest interval, (0, 1].
	Smoothing float64 `toml:"smoothing"`
}

func defaultPressure() Pressure {
	return Pressure{
		Source:    "proc",
		ProcRoot:  "/proc",
		CgroupDir: "",
		Interval:  Duration(250 * time.Millisecond),
		Smoothing: 0.5,
	}
}

var pressureDocs = map[string]string{
	"pressure":            "Where pressure stall information (PSI) is read.",
	"pressure.source":     "proc (system-wide, under proc_root) or cgroup (a cgroup v2 directory, cgroup_dir).",
	"pressure.proc_root":  "Mount point of procfs; PSI is read from proc_root/pressure.",
	"pressure.cgroup_dir": "cgroup v2 directory whose cpu.pressure, io.pressure and memory.pressure are read.",
	"pressure.interval":   "Sample interval; the controller resizes the limits once per sample.",
	"pressure.smoothing":  "Weight of the newest sample in the moving average, (0, 1]; 1 is no smoothing.",
}

// validate checks the [pressure] section.
func (p Pressure) validate() []error {
	var errs problems
	switch p.Source {
	case "proc":
		if p.ProcRoot == "" {
			errs.add("pressure.proc_root", "must not be empty when pressure.source is proc")
		}
	case "cgroup":
		if p.CgroupDir == "" {
			errs.add("pressure.cgroup_dir", "must be set when pressure.source is cgroup")
		}
	default:
		errs.add("pressure.source", "%q not one of proc, cgroup", p.Source)
	}
	errs.duration("pressure.interval", p.Interval, 10*time.Millisecond, time.Minute)
	errs.positive("pressure.smoothing", p.Smoothing, 1)
	return errs
}
