package kubebench

import (
	"path/filepath"
	"strings"
	"testing"
)

// A saved run reads back as it was written; it resumes only as the same
// benchmark at the same known commit, and only its missing cycles run.
func TestResume(t *testing.T) {
	prev := &Result{Modes: []string{"direct", "startgate"}, Scenarios: []string{Recreate, Rolling}, Pods: 40, Rounds: 5,
		Workload: WorkCPU, PatchSize: 1 << 20, Cores: 2, Env: Env{Commit: "abc123def456"},
		Runs: []ScenarioRun{
			{Scenario: Recreate, Mode: "direct", Round: 1}, {Scenario: Rolling, Mode: "direct", Round: 1},
			{Scenario: Recreate, Mode: "startgate", Round: 1},
		}}
	path := filepath.Join(t.TempDir(), "run.json")
	if err := saveResult(path, prev); err != nil {
		t.Fatal(err)
	}
	got, err := LoadResult(path)
	if err != nil || len(got.Runs) != 3 || got.Env.Commit != prev.Env.Commit {
		t.Fatalf("LoadResult = %+v, %v", got, err)
	}
	if !got.done("direct", 1) || got.done("startgate", 1) || got.done("direct", 2) {
		t.Errorf("done: direct 1 %v (want true), startgate 1 %v (only recreate: want false), direct 2 %v (want false)",
			got.done("direct", 1), got.done("startgate", 1), got.done("direct", 2))
	}
	same := *prev
	same.Runs = nil
	if err := sameBenchmark(got, &same); err != nil {
		t.Errorf("the same benchmark: %v", err)
	}
	other := same
	other.Pods, other.Env.Commit = 20, "fff"
	if err := sameBenchmark(got, &other); err == nil || !strings.Contains(err.Error(), "pods") || !strings.Contains(err.Error(), "commit") {
		t.Errorf("another benchmark: %v, want pods and commit named", err)
	}
	dirty := *got
	dirty.Env.Commit = "abc123def456+modified"
	sameDirty := same
	sameDirty.Env.Commit = dirty.Env.Commit
	if err := sameBenchmark(&dirty, &sameDirty); err == nil {
		t.Error("a run from a modified checkout resumed")
	}
}
