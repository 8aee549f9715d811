package kubelet

import (
	"fmt"
	"strings"
)

// Arg is one word of kubelet's command line and where its text is
// written, so that the place that sets a flag can be changed.
type Arg struct {
	Value string `json:"value"`
	// File is the file whose text gave this word: the unit file or
	// drop-in of the ExecStart= line, or the environment file or unit
	// file that assigned the $VARIABLE it came from.
	File string `json:"file"`
	// Via names how: "ExecStart" or "$NAME".
	Via string `json:"via"`
}

// envValue is a variable's value and the file that assigned it.
type envValue struct {
	value, file string
}

// execArgs turns an ExecStart= value into the command line systemd
// runs (systemd.service(5), "Command lines"): the prefixes @-:+! are
// dropped, words are split at blanks with "double" and 'single' quotes
// and C escapes, then a word that is exactly $NAME becomes the
// variable's value split into words (quotes honoured), and ${NAME}
// anywhere in a word is replaced by the value as it is. A ":" prefix
// turns substitution off. file is where the line is written.
func execArgs(line, file string, env map[string]envValue) ([]Arg, error) {
	line = strings.TrimSpace(line)
	expand := true
	for len(line) > 0 && strings.ContainsRune("@-:+!", rune(line[0])) {
		if line[0] == ':' {
			expand = false
		}
		line = line[1:]
	}
	words, err := splitWords(line)
	if err != nil {
		return nil, fmt.Errorf("%s: ExecStart: %w", file, err)
	}
	var out []Arg
	for _, w := range words {
		if !expand {
			out = append(out, Arg{Value: w, File: file, Via: "ExecStart"})
			continue
		}
		if name, ok := strings.CutPrefix(w, "$"); ok && validEnvName(name) {
			v, set := env[name]
			if !set {
				continue // an unset $NAME word gives no argument
			}
			vw, err := splitWords(v.value)
			if err != nil {
				return nil, fmt.Errorf("%s: $%s: %w", v.file, name, err)
			}
			for _, x := range vw {
				out = append(out, Arg{Value: x, File: v.file, Via: "$" + name})
			}
			continue
		}
		val, from := expandBraces(w, env)
		a := Arg{Value: val, File: file, Via: "ExecStart"}
		if from != "" {
			// The word's text is part unit, part variable: the variable
			// is where a flag's value would be written.
			a.File, a.Via = env[from].file, "${"+from+"}"
		}
		out = append(out, a)
	}
	return out, nil
}

// expandBraces replaces every ${NAME} in w; from is the last variable
// used ("" if none).
func expandBraces(w string, env map[string]envValue) (out, from string) {
	var b strings.Builder
	for {
		i := strings.Index(w, "${")
		if i < 0 {
			b.WriteString(w)
			return b.String(), from
		}
		j := strings.IndexByte(w[i:], '}')
		if j < 0 || !validEnvName(w[i+2:i+j]) {
			b.WriteString(w[:i+2])
			w = w[i+2:]
			continue
		}
		name := w[i+2 : i+j]
		b.WriteString(w[:i])
		b.WriteString(env[name].value)
		from = name
		w = w[i+j+1:]
	}
}

// splitWords splits s at blanks, honouring quotes and C escapes as
// systemd's extract_first_word(EXTRACT_UNQUOTE|EXTRACT_CUNESCAPE) does.
func splitWords(s string) ([]string, error) {
	var words []string
	var w strings.Builder
	in := false // inside a word
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			if in {
				words = append(words, w.String())
				w.Reset()
				in = false
			}
		case c == '"' || c == '\'':
			in = true
			q := c
			i++
			for ; i < len(s) && s[i] != q; i++ {
				if s[i] == '\\' && q == '"' && i+1 < len(s) {
					i++
					w.WriteByte(unescape(s[i]))
					continue
				}
				w.WriteByte(s[i])
			}
			if i >= len(s) {
				return nil, fmt.Errorf("unterminated %c quote in %q", q, s)
			}
		case c == '\\' && i+1 < len(s):
			in = true
			i++
			w.WriteByte(unescape(s[i]))
		default:
			in = true
			w.WriteByte(c)
		}
	}
	if in {
		words = append(words, w.String())
	}
	return words, nil
}

// unescape is the character a C escape \c stands for.
func unescape(c byte) byte {
	switch c {
	case 'n':
		return '\n'
	case 't':
		return '\t'
	case 'r':
		return '\r'
	}
	return c
}
