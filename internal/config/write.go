package config

import (
	"fmt"
	"io"
	"maps"
	"strings"

	"github.com/BurntSushi/toml"
)

// WriteTOML writes c in the form Load reads, each key preceded by a
// comment saying what it does.
func (c *Config) WriteTOML(w io.Writer) error {
	var enc strings.Builder
	if err := toml.NewEncoder(&enc).Encode(c); err != nil {
		return fmt.Errorf("config: encode: %w", err)
	}
	var b strings.Builder
	b.WriteString("# startgated configuration. Every key but version is optional; a key left\n" +
		"# out keeps the default shown by `startgated config default`.\n\n")
	section := ""
	documented := map[string]bool{}
	for _, line := range strings.Split(strings.TrimRight(enc.String(), "\n"), "\n") {
		trimmed := strings.TrimSpace(line)
		indent := line[:len(line)-len(strings.TrimLeft(line, " "))]
		key := ""
		switch {
		case strings.HasPrefix(trimmed, "["):
			section = strings.Trim(trimmed, "[]")
			key = section
			// The encoder puts no blank line after an array of tables.
			if !strings.HasSuffix(b.String(), "\n\n") {
				b.WriteString("\n")
			}
		case strings.Contains(trimmed, " = "):
			key, _, _ = strings.Cut(trimmed, " = ")
			if section != "" {
				key = section + "." + key
			}
		}
		// A key of an array of tables ([[cri.rules]]) repeats; its comment
		// is written once, above the first.
		if doc := keyDocs[key]; doc != "" && !documented[key] {
			documented[key] = true
			for _, d := range strings.Split(doc, "\n") {
				b.WriteString(indent + "# " + d + "\n")
			}
		}
		b.WriteString(line + "\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// keyDocs are the comments WriteTOML puts above each key, gathered from
// the sections' own files; a test checks that every key has one.
var keyDocs = joinDocs(versionDocs, daemonDocs, metricsDocs, pressureDocs, admissionDocs, criDocs, prefetchDocs, kubernetesDocs, fleetDocs)

func joinDocs(sections ...map[string]string) map[string]string {
	all := map[string]string{}
	for _, s := range sections {
		for k := range s {
			if _, dup := all[k]; dup {
				panic("config: key " + k + " documented twice")
			}
		}
		maps.Copy(all, s)
	}
	return all
}
