package kubelet

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"

	yamlv3 "go.yaml.in/yaml/v3"
)

// The edits keep every byte of a file but the value they change: the
// files are parsed (kubelet's config with a YAML parser that reports
// positions, unit and environment files by the rules in unit.go and
// envfile.go) to find the value, and only its bytes are replaced. Every
// plan is then resolved again over its edits (Node.overlay) and must
// give the endpoint asked for, so an edit that a parser would read
// otherwise is refused before anything is written.

// setFlagValue replaces the value of the one --container-runtime-endpoint
// flag written in a unit or environment file (not in a comment line).
func setFlagValue(b []byte, file, value string) ([]byte, error) {
	type span struct{ start, end int }
	var found []span
	off := 0
	for _, line := range bytes.SplitAfter(b, []byte("\n")) {
		t := bytes.TrimLeft(line, " \t")
		if len(t) > 0 && (t[0] == '#' || t[0] == ';') {
			off += len(line)
			continue
		}
		for _, name := range []string{"--" + flagEndpoint, "--" + strings.ReplaceAll(flagEndpoint, "-", "_")} {
			for i := 0; ; {
				j := bytes.Index(line[i:], []byte(name))
				if j < 0 {
					break
				}
				at := i + j
				i = at + len(name)
				if at > 0 && !bytes.ContainsRune([]byte(" \t\"'="), rune(line[at-1])) {
					continue // part of a longer word
				}
				k := i
				if k < len(line) && line[k] == '=' {
					k++
				} else {
					for k < len(line) && (line[k] == ' ' || line[k] == '\t') {
						k++
					}
					if k == i {
						continue // --container-runtime-endpointX: another flag
					}
				}
				e := k
				for e < len(line) && !bytes.ContainsRune([]byte(" \t\r\n\"'\\"), rune(line[e])) {
					e++
				}
				if e == k {
					return nil, fmt.Errorf("kubelet: %s: %s has its value where it cannot be changed safely (quoted apart, or on the next line): edit it by hand", file, name)
				}
				found = append(found, span{off + k, off + e})
			}
		}
		off += len(line)
	}
	switch len(found) {
	case 0:
		return nil, fmt.Errorf("kubelet: %s: no --%s to change", file, flagEndpoint)
	case 1:
	default:
		return nil, fmt.Errorf("kubelet: %s sets --%s %d times: leave one and run again", file, flagEndpoint, len(found))
	}
	s := found[0]
	return splice(b, s.start, s.end, value), nil
}

// setConfigValue sets containerRuntimeEndpoint in a KubeletConfiguration
// file: the value replaced in its own quoting style where the key is,
// else the key added (a line at the end of a YAML file, a first member
// of a JSON object in the file's own indentation).
func setConfigValue(b []byte, file, value string) ([]byte, error) {
	var doc yamlv3.Node
	dec := yamlv3.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("kubelet: %s: %w", file, err)
	}
	var more yamlv3.Node
	if err := dec.Decode(&more); err == nil {
		return nil, fmt.Errorf("kubelet: %s holds more than one YAML document; kubelet reads one: fix the file first", file)
	}
	if doc.Kind != yamlv3.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yamlv3.MappingNode {
		return nil, fmt.Errorf("kubelet: %s is not a mapping", file)
	}
	root := doc.Content[0]
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if k.Value != "containerRuntimeEndpoint" {
			continue
		}
		if v.Kind != yamlv3.ScalarNode {
			return nil, fmt.Errorf("kubelet: %s: containerRuntimeEndpoint is not a string", file)
		}
		start, end, err := scalarSpan(b, v)
		if err != nil {
			return nil, fmt.Errorf("kubelet: %s: containerRuntimeEndpoint: %w", file, err)
		}
		return splice(b, start, end, quoteLike(v.Style, value)), nil
	}
	// Not there: add it.
	if root.Style&yamlv3.FlowStyle == 0 {
		out := append([]byte(nil), b...)
		if len(out) > 0 && out[len(out)-1] != '\n' {
			out = append(out, '\n')
		}
		return append(out, "containerRuntimeEndpoint: "+quoteLike(0, value)+"\n"...), nil
	}
	open := offsetOf(b, root.Line, root.Column)
	if open < 0 || open >= len(b) || b[open] != '{' {
		return nil, fmt.Errorf("kubelet: %s: cannot find where its mapping opens", file)
	}
	member := quoteLike(yamlv3.DoubleQuotedStyle, "containerRuntimeEndpoint") + ": " + quoteLike(yamlv3.DoubleQuotedStyle, value)
	if len(root.Content) == 0 {
		return splice(b, open+1, open+1, member), nil
	}
	first := root.Content[0]
	if first.Line == root.Line {
		return splice(b, open+1, open+1, member+", "), nil
	}
	// The first member's indentation, on a line of its own.
	fo := offsetOf(b, first.Line, 1)
	indent := b[fo : fo+first.Column-1]
	return splice(b, open+1, open+1, "\n"+string(indent)+member+","), nil
}

// scalarSpan is where a one-line scalar's text is in b.
func scalarSpan(b []byte, v *yamlv3.Node) (int, int, error) {
	start := offsetOf(b, v.Line, v.Column)
	if start < 0 {
		return 0, 0, fmt.Errorf("line %d column %d is outside the file", v.Line, v.Column)
	}
	end := start
	switch {
	case v.Style&yamlv3.DoubleQuotedStyle != 0:
		for end = start + 1; end < len(b) && b[end] != '"'; end++ {
			if b[end] == '\\' {
				end++
			}
		}
		end++
	case v.Style&yamlv3.SingleQuotedStyle != 0:
		for end = start + 1; end < len(b); end++ {
			if b[end] == '\'' {
				if end+1 < len(b) && b[end+1] == '\'' {
					end++
					continue
				}
				break
			}
		}
		end++
	case v.Style&(yamlv3.LiteralStyle|yamlv3.FoldedStyle) != 0:
		return 0, 0, fmt.Errorf("written as a block scalar: edit it by hand")
	default: // plain: as many bytes as its value, when written as is
		end = start + len(v.Value)
		if end > len(b) || string(b[start:end]) != v.Value {
			return 0, 0, fmt.Errorf("written across lines: edit it by hand")
		}
	}
	if end > len(b) || bytes.ContainsRune(b[start:end], '\n') {
		return 0, 0, fmt.Errorf("written across lines: edit it by hand")
	}
	return start, end, nil
}

// offsetOf is the byte offset of a 1-based line and column (columns
// count characters, as the YAML parser does); -1 if out of range.
func offsetOf(b []byte, line, col int) int {
	off := 0
	for l := 1; l < line; l++ {
		i := bytes.IndexByte(b[off:], '\n')
		if i < 0 {
			return -1
		}
		off += i + 1
	}
	for c := 1; c < col; c++ {
		if off >= len(b) || b[off] == '\n' {
			return -1
		}
		_, size := utf8.DecodeRune(b[off:])
		off += size
	}
	return off
}

// quoteLike writes s as a YAML/JSON scalar in style.
func quoteLike(style yamlv3.Style, s string) string {
	switch {
	case style&yamlv3.DoubleQuotedStyle != 0:
		q, _ := json.Marshal(s) // a JSON string is a YAML double-quoted scalar
		return string(q)
	case style&yamlv3.SingleQuotedStyle != 0:
		return "'" + strings.ReplaceAll(s, "'", "''") + "'"
	}
	// Plain when it reads back as the same string, else double-quoted.
	var back string
	if err := yamlv3.Unmarshal([]byte("v: "+s), &struct {
		V *string `yaml:"v"`
	}{&back}); err == nil && back == s {
		return s
	}
	return quoteLike(yamlv3.DoubleQuotedStyle, s)
}

func splice(b []byte, start, end int, s string) []byte {
	out := make([]byte, 0, len(b)-(end-start)+len(s))
	out = append(out, b[:start]...)
	out = append(out, s...)
	return append(out, b[end:]...)
}

// jsonIndent writes v as JSON indented by four spaces (nodeadm's style)
// and a final newline.
func jsonIndent(v any) ([]byte, error) {
	b, err := json.MarshalIndent(v, "", "    ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
