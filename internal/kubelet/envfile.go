package kubelet

import (
	"strings"
)

// parseEnvFile reads an EnvironmentFile= as systemd does
// (systemd.exec(5), "EnvironmentFile="; load_env_file in systemd's
// src/basic/env-file.c): one KEY=VALUE per line, leading blanks skipped,
// lines starting with # or ; are comments, a value may be single-quoted
// (literal) or double-quoted (\" \\ \$ \` escapes), an unquoted value
// keeps inner blanks, drops trailing ones and takes \x as x, and a
// backslash at the end of a line continues the value on the next one.
// There is no inline comment and no "export". Assignments later in the
// file win. A line without = or with an invalid name is skipped, as
// systemd skips it (with a warning).
func parseEnvFile(b []byte) map[string]string {
	env := map[string]string{}
	s := string(b)
	for len(s) > 0 {
		s = strings.TrimLeft(s, " \t\r\n")
		if s == "" {
			break
		}
		if s[0] == '#' || s[0] == ';' {
			s = skipLine(s)
			continue
		}
		eq := strings.IndexAny(s, "=\n")
		if eq < 0 || s[eq] == '\n' {
			s = skipLine(s)
			continue
		}
		key := strings.TrimRight(s[:eq], " \t")
		s = strings.TrimLeft(s[eq+1:], " \t")
		var val strings.Builder
		s = readEnvValue(s, &val)
		if validEnvName(key) {
			env[key] = val.String()
		}
	}
	return env
}

// readEnvValue reads one value from the start of s into val and returns
// what follows its line.
func readEnvValue(s string, val *strings.Builder) string {
	// pending holds unquoted blanks: kept only if more text follows.
	pending := ""
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\n':
			return s[i+1:]
		case c == '\\' && i+1 < len(s):
			i++
			if s[i] == '\n' { // continuation
				continue
			}
			val.WriteString(pending)
			pending = ""
			val.WriteByte(s[i])
		case c == '\'':
			end := strings.IndexByte(s[i+1:], '\'')
			if end < 0 {
				end = len(s) - i - 1
			}
			val.WriteString(pending)
			pending = ""
			val.WriteString(s[i+1 : i+1+end])
			i += end + 1
		case c == '"':
			val.WriteString(pending)
			pending = ""
			i++
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) {
					switch s[i+1] {
					case '"', '\\', '$', '`':
						i++
					case '\n':
						i++
						continue
					}
				}
				val.WriteByte(s[i])
			}
		case c == ' ' || c == '\t' || c == '\r':
			pending += string(c)
		default:
			val.WriteString(pending)
			pending = ""
			val.WriteByte(c)
		}
	}
	return ""
}

func skipLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return ""
}

// validEnvName is systemd's env_name_is_valid: letters, digits and _,
// not starting with a digit.
func validEnvName(k string) bool {
	if k == "" || k[0] >= '0' && k[0] <= '9' {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}
