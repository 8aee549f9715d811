package healthz

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"go.uber.org/zap"
)

// Check is one named health check.
type Check struct {
	// Name is the check's line and path: [+]Name, /readyz/Name.
	Name string
	// Func answers nil when healthy, an error saying why not, or a
	// Warning: healthy, with a note. It must return within the request's
	// context; a check that talks to another process bounds its own time.
	Func func(r *http.Request) error
}

// Ping always passes: the process answers HTTP.
var Ping = Check{Name: "ping", Func: func(*http.Request) error { return nil }}

// Warning marks a passing check that has something to say.
func Warning(err error) error { return warning{err} }

type warning struct{ error }

func (w warning) Unwrap() error { return w.error }

// Install serves path and path/<name> of each check on mux. log, when
// not nil, gets a debug line for each failed root request, as the API
// server logs its failures at verbosity 2; the checks' own subjects log
// their failures where they happen.
func Install(mux *http.ServeMux, path string, log *zap.Logger, checks ...Check) {
	if log == nil {
		log = zap.NewNop()
	}
	name := strings.TrimPrefix(path, "/")
	mux.Handle(path, root(name, log, checks))
	for _, c := range checks {
		mux.Handle(path+"/"+c.Name, one(c))
	}
}

func root(name string, log *zap.Logger, checks []Check) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		excluded := q["exclude"]
		unknown := slices.Clone(excluded)
		var lines, warns bytes.Buffer
		var failed []string
		for _, c := range checks {
			if slices.Contains(excluded, c.Name) {
				unknown = slices.DeleteFunc(unknown, func(s string) bool { return s == c.Name })
				fmt.Fprintf(&lines, "[+]%s excluded: ok\n", c.Name)
				continue
			}
			err := c.Func(r)
			var warn warning
			switch {
			case errors.As(err, &warn):
				fmt.Fprintf(&lines, "[+]%s ok\n", c.Name)
				fmt.Fprintf(&warns, "warn: %s: %v\n", c.Name, warn.error)
			case err != nil:
				fmt.Fprintf(&lines, "[-]%s failed: %v\n", c.Name, err)
				failed = append(failed, c.Name)
			default:
				fmt.Fprintf(&lines, "[+]%s ok\n", c.Name)
			}
		}
		lines.Write(warns.Bytes())
		if len(unknown) > 0 {
			fmt.Fprintf(&lines, "warn: some health checks cannot be excluded: no matches for %q\n", unknown)
		}
		header(w)
		if len(failed) > 0 {
			log.Debug(name+" check failed", zap.Strings("failed", failed), zap.String("checks", lines.String()))
			w.WriteHeader(http.StatusInternalServerError)
			fmt.Fprintf(w, "%s%s check failed\n", lines.Bytes(), name)
			return
		}
		if _, verbose := q["verbose"]; !verbose {
			fmt.Fprint(w, "ok")
			return
		}
		fmt.Fprintf(w, "%s%s check passed\n", lines.Bytes(), name)
	})
}

func one(c Check) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		header(w)
		err := c.Func(r)
		var warn warning
		if err != nil && !errors.As(err, &warn) {
			w.WriteHeader(http.StatusInternalServerError)
			fmt.Fprintf(w, "internal server error: %v\n", err)
			return
		}
		fmt.Fprint(w, "ok")
	})
}

func header(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	// A probe must see the answer of now, never a cache's.
	w.Header().Set("Cache-Control", "no-store")
}
