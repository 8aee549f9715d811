// Package version says which build this is: the release set at link time
// (make sets it from git describe), with the VCS revision and the Go
// version the toolchain recorded in the binary.
package version

import (
	"fmt"
	"runtime/debug"
	"sync"
)

// Version is set at link time:
// -X github.com/startgate/startgate/internal/version.Version=v1.2.3
var Version = "dev"

// Info describes one binary.
type Info struct {
	Version   string `json:"version"`
	Revision  string `json:"revision,omitempty"` // the VCS commit, "" when not built from a checkout
	Modified  bool   `json:"modified,omitempty"` // built from a checkout with changes
	GoVersion string `json:"goVersion"`
}

// Get returns this binary's Info (read once).
var Get = sync.OnceValue(func() Info {
	info := Info{Version: Version}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return info
	}
	info.GoVersion = bi.GoVersion
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			info.Revision = s.Value
		case "vcs.modified":
			info.Modified = s.Value == "true"
		}
	}
	return info
})

// String is "VERSION (REVISION[, modified], GOVERSION)", the revision cut
// to 12 characters.
func (i Info) String() string {
	rev := i.Revision
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev == "" {
		rev = "no revision"
	}
	if i.Modified {
		rev += ", modified"
	}
	return fmt.Sprintf("%s (%s, %s)", i.Version, rev, i.GoVersion)
}
