// Command genman writes the man pages of startgatectl (section 1) and
// startgated (section 8) from their cobra command trees, one page per
// command as github.com/spf13/cobra/doc lays them out
// (startgatectl-node-enable.1). make package runs it; the pages are not
// kept in the repository, so they cannot drift from the commands. It
// imports the command constructors instead of asking the binaries (a
// hidden subcommand), so the shipped binaries carry no generator.
//
//	go run ./hack/genman -out DIR -version V [-date RFC3339]
//
// writes DIR/man1/*.1 and DIR/man8/*.8. The date (default: the commit's,
// given by make) goes into every page, so that the same commit gives the
// same pages.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"

	"github.com/startgate/startgate/internal/ctl"
	"github.com/startgate/startgate/internal/daemon"
)

func main() {
	out := flag.String("out", "", "directory to write man1/ and man8/ under")
	ver := flag.String("version", "", "the version the pages name (hack/version.sh)")
	date := flag.String("date", "", "the pages' date, RFC 3339 (default now)")
	flag.Parse()
	// startgatectl's --socket default comes from it: the pages show the
	// built-in default, not this shell's.
	os.Unsetenv("STARTGATE_SOCKET")
	if err := run(*out, *ver, *date); err != nil {
		fmt.Fprintln(os.Stderr, "genman:", err)
		os.Exit(1)
	}
}

func run(out, ver, date string) error {
	if out == "" || ver == "" {
		return fmt.Errorf("-out and -version are required")
	}
	when := time.Now().UTC()
	if date != "" {
		t, err := time.Parse(time.RFC3339, date)
		if err != nil {
			return fmt.Errorf("-date %q: %w", date, err)
		}
		when = t.UTC()
	}
	ctlCmd := ctl.NewCommand()
	// cobra adds its completion command when the command runs, not when
	// it is built; startgatectl has one, so its page belongs here.
	ctlCmd.InitDefaultCompletionCmd()
	for _, p := range []struct {
		cmd     *cobra.Command
		section string
	}{
		// startgated is a daemon run by systemd: section 8, system
		// administration, as containerd(8) and kubelet's pages are.
		{ctlCmd, "1"},
		{daemon.NewCommand(), "8"},
	} {
		dir := filepath.Join(out, "man"+p.section)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		noAutoGenTag(p.cmd)
		if err := doc.GenManTree(p.cmd, &doc.GenManHeader{
			Section: p.section,
			Date:    &when,
			Source:  "startgate " + ver,
			Manual:  "startgate manual",
		}, dir); err != nil {
			return fmt.Errorf("%s: %w", p.cmd.Name(), err)
		}
	}
	return nil
}

// noAutoGenTag drops cobra's "Auto generated" HISTORY section, which
// carries the generation day and says nothing a reader needs.
func noAutoGenTag(c *cobra.Command) {
	c.DisableAutoGenTag = true
	for _, s := range c.Commands() {
		noAutoGenTag(s)
	}
}
