package kubebench

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
)

// A full run (every mode, a warm-up and five rounds) takes hours. Run
// saves the result after every mode's cycle (Options.Save), atomically,
// so an interruption (a reboot, a session's end, Ctrl-C) loses at most
// the cycle under way; --resume FILE loads such a file and runs only the
// cycles it lacks, in the same order, into the same file. A resumed run
// must be the same benchmark: the same modes, scenarios, pods, workload,
// patch size, probe period and commit, else it is refused.

// saveResult writes r to path atomically (a temporary file renamed).
func saveResult(path string, r *Result) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// LoadResult reads a result saved by Run.
func LoadResult(path string) (*Result, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	r := new(Result)
	if err := json.Unmarshal(b, r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return r, nil
}

// sameBenchmark reports why prev cannot be resumed with res (the new
// run's header), or nil.
func sameBenchmark(prev, res *Result) error {
	var diffs []string
	check := func(what string, same bool) {
		if !same {
			diffs = append(diffs, what)
		}
	}
	check("modes", slices.Equal(prev.Modes, res.Modes))
	check("scenarios", slices.Equal(prev.Scenarios, res.Scenarios))
	check("pods", prev.Pods == res.Pods)
	check("rounds", prev.Rounds == res.Rounds)
	check("warm-up", prev.Warmup == res.Warmup)
	check("workload", prev.Workload == res.Workload && prev.InitCPU == res.InitCPU && prev.IOBytes == res.IOBytes)
	check("patch size", prev.PatchSize == res.PatchSize)
	check("probe period", prev.ProbePeriod == res.ProbePeriod)
	check("load", prev.Load == res.Load)
	check("registry", prev.RegistryBandwidth == res.RegistryBandwidth && prev.RegistryRTT == res.RegistryRTT && prev.RegistryToken == res.RegistryToken)
	check("commit", prev.Env.Commit == res.Env.Commit)
	check("cores", prev.Cores == res.Cores)
	if len(diffs) > 0 {
		return fmt.Errorf("kubebench: --resume: the saved run differs in %v: resume it with the same flags at the same commit, or start a new one", diffs)
	}
	if prev.Env.Commit == "" || len(prev.Env.Commit) > 9 && prev.Env.Commit[len(prev.Env.Commit)-9:] == "+modified" {
		return errors.New("kubebench: --resume: the saved run's commit is unknown or a modified checkout: its rounds could not be told apart from this one's")
	}
	return nil
}

// done reports whether res holds every wanted scenario of mode in round.
func (res *Result) done(mode string, round int) bool {
	for _, sc := range res.Scenarios {
		found := false
		for _, r := range res.Runs {
			if r.Mode == mode && r.Round == round && r.Scenario == sc {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}
