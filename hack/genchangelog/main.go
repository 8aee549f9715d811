// Command genchangelog writes the package's changelog from git, at
// package time: the Debian changelog (gzipped, for the .deb's
// /usr/share/doc/startgate/changelog.gz) and the same entries as a chglog
// file (nfpm's `changelog:`, which becomes the .rpm's %changelog).
//
// An entry per release tag vX.Y.Z reachable from HEAD, newest first, each
// listing the commit subjects since the tag before it; and, when HEAD is
// not itself a release, a first entry for -version with the commits since
// the last release. An entry lists at most maxChanges commits, then says
// how many more there were: a first release of a long history would
// otherwise ship every subject ever written.
//
//	go run ./hack/genchangelog -version V -maintainer 'NAME <MAIL>' -deb changelog.gz -chglog changelog.yml
//
// Dates are the commits' (reproducible), the version is hack/version.sh's.
package main

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// maxChanges bounds one entry's list of commits.
const maxChanges = 100

// entry is one version's part of the changelog.
type entry struct {
	Version string
	Date    time.Time
	Changes []string // commit subjects, newest first
	More    int      // commits left out past maxChanges
}

func main() {
	name := flag.String("name", "startgate", "the package's name")
	ver := flag.String("version", "", "the version being packaged (hack/version.sh)")
	maintainer := flag.String("maintainer", "", `the packager, "NAME <MAIL>"`)
	deb := flag.String("deb", "", "write the gzipped Debian changelog here")
	chglog := flag.String("chglog", "", "write the chglog (nfpm) changelog here")
	flag.Parse()
	if err := run(*name, *ver, *maintainer, *deb, *chglog); err != nil {
		fmt.Fprintln(os.Stderr, "genchangelog:", err)
		os.Exit(1)
	}
}

func run(name, ver, maintainer, debOut, chglogOut string) error {
	if ver == "" || maintainer == "" {
		return fmt.Errorf("-version and -maintainer are required")
	}
	entries, err := gitEntries(ver)
	if err != nil {
		return err
	}
	if debOut != "" {
		var buf bytes.Buffer
		// BestCompression, no name and no time in the header: what
		// `gzip -9n` writes, and what lintian asks of a changelog.
		zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
		if _, err := zw.Write([]byte(debianChangelog(name, maintainer, entries))); err != nil {
			return err
		}
		if err := zw.Close(); err != nil {
			return err
		}
		if err := os.WriteFile(debOut, buf.Bytes(), 0o644); err != nil {
			return err
		}
	}
	if chglogOut != "" {
		if err := os.WriteFile(chglogOut, []byte(chglogYAML(maintainer, entries)), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// releaseTag is a tag hack/version.sh takes as a release.
var releaseTag = regexp.MustCompile(`^v(\d+)\.(\d+)\.(\d+)$`)

// gitEntries reads the entries from the repository in the working directory.
func gitEntries(ver string) ([]entry, error) {
	out, err := git("tag", "--list", "v*", "--merged", "HEAD")
	if err != nil {
		return nil, err
	}
	var tags []string
	for _, t := range strings.Fields(out) {
		if releaseTag.MatchString(t) {
			tags = append(tags, t)
		}
	}
	slices.SortFunc(tags, func(a, b string) int { return compareRelease(b, a) }) // newest first
	var entries []entry
	head := "HEAD"
	if len(tags) > 0 {
		at, err := git("rev-parse", tags[0]+"^{commit}")
		if err != nil {
			return nil, err
		}
		h, err := git("rev-parse", "HEAD")
		if err != nil {
			return nil, err
		}
		// HEAD is the newest release and ver is its version (or its
		// +dirty build): its entry is the tag's, under ver.
		if strings.TrimSpace(at) == strings.TrimSpace(h) {
			head = ""
		}
	}
	ranges := []struct{ version, to, from string }{}
	if head != "" {
		from := ""
		if len(tags) > 0 {
			from = tags[0]
		}
		ranges = append(ranges, struct{ version, to, from string }{ver, head, from})
	}
	for i, t := range tags {
		from := ""
		if i+1 < len(tags) {
			from = tags[i+1]
		}
		v := strings.TrimPrefix(t, "v")
		if i == 0 && head == "" {
			v = ver
		}
		ranges = append(ranges, struct{ version, to, from string }{v, t, from})
	}
	for _, r := range ranges {
		e, err := rangeEntry(r.version, r.to, r.from)
		if err != nil {
			return nil, err
		}
		entries = append(entries, e)
	}
	return entries, nil
}

// rangeEntry is version's entry: the commits reachable from to and not
// from from (all of to's history when from is "").
func rangeEntry(version, to, from string) (entry, error) {
	date, err := git("log", "-1", "--format=%cI", to)
	if err != nil {
		return entry{}, err
	}
	e := entry{Version: version}
	if e.Date, err = time.Parse(time.RFC3339, strings.TrimSpace(date)); err != nil {
		return entry{}, fmt.Errorf("the date of %s: %w", to, err)
	}
	rev := to
	if from != "" {
		rev = from + ".." + to
	}
	subjects, err := git("log", "--no-merges", "--format=%s", rev)
	if err != nil {
		return entry{}, err
	}
	for _, s := range strings.Split(strings.TrimSpace(subjects), "\n") {
		if s = strings.TrimSpace(s); s != "" {
			e.Changes = append(e.Changes, s)
		}
	}
	if len(e.Changes) == 0 {
		e.Changes = []string{"No changes since " + strings.TrimPrefix(from, "v") + "."}
	}
	if len(e.Changes) > maxChanges {
		e.More = len(e.Changes) - maxChanges
		e.Changes = e.Changes[:maxChanges]
	}
	return e, nil
}

// compareRelease orders two release tags by their numbers.
func compareRelease(a, b string) int {
	ma, mb := releaseTag.FindStringSubmatch(a), releaseTag.FindStringSubmatch(b)
	for i := 1; i <= 3; i++ {
		x, _ := strconv.Atoi(ma[i])
		y, _ := strconv.Atoi(mb[i])
		if x != y {
			return x - y
		}
	}
	return 0
}

func git(args ...string) (string, error) {
	out, err := exec.Command("git", args...).Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = strings.TrimSpace(string(ee.Stderr))
		}
		return "", fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, stderr)
	}
	return string(out), nil
}

// debianChangelog is the entries in Debian's changelog format
// (deb-changelog(5)), bullets wrapped at 80 columns.
func debianChangelog(name, maintainer string, entries []entry) string {
	var b strings.Builder
	for i, e := range entries {
		if i > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "%s (%s) stable; urgency=medium\n\n", name, e.Version)
		for _, c := range e.Changes {
			b.WriteString(wrap(c, "  * ", "    ", 80))
		}
		if e.More > 0 {
			b.WriteString(wrap(fmt.Sprintf("And %d earlier commits (git log).", e.More), "  * ", "    ", 80))
		}
		fmt.Fprintf(&b, "\n -- %s  %s\n", maintainer, e.Date.Format("Mon, 02 Jan 2006 15:04:05 -0700"))
	}
	return b.String()
}

// wrap breaks s into lines of at most width columns (a longer word stays
// whole), the first prefixed by first, the rest by rest.
func wrap(s, first, rest string, width int) string {
	var b strings.Builder
	line := first
	empty := true
	for _, w := range strings.Fields(s) {
		if !empty && len(line)+1+len(w) > width {
			b.WriteString(line + "\n")
			line, empty = rest, true
		}
		if !empty {
			line += " "
		}
		line += w
		empty = false
	}
	b.WriteString(line + "\n")
	return b.String()
}

// chglogYAML is the entries as github.com/goreleaser/chglog reads them.
// Strings are written as JSON strings, which YAML reads as they are.
func chglogYAML(maintainer string, entries []entry) string {
	q := func(s string) string {
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false) // "<MAIL>" stays readable
		_ = enc.Encode(s)        // a string always encodes
		return strings.TrimSuffix(b.String(), "\n")
	}
	var b strings.Builder
	for _, e := range entries {
		fmt.Fprintf(&b, "- semver: %s\n  date: %s\n  packager: %s\n  changes:\n",
			q(e.Version), e.Date.UTC().Format(time.RFC3339), q(maintainer))
		for _, c := range e.Changes {
			fmt.Fprintf(&b, "    - note: %s\n", q(c))
		}
		if e.More > 0 {
			fmt.Fprintf(&b, "    - note: %s\n", q(fmt.Sprintf("And %d earlier commits (git log).", e.More)))
		}
	}
	return b.String()
}
