package config

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/docker/go-units"
)

// Size is a byte count written in TOML the way docker and containerd
// write sizes (go-units' RAMInBytes): "50MiB", "50MB" and "50m" are all
// 50 MiB; "0" is zero. It keeps the string form in both directions.
type Size int64

// UnmarshalText parses a size; it must not be negative.
func (z *Size) UnmarshalText(b []byte) error {
	v, err := units.RAMInBytes(string(b))
	if err != nil || v < 0 {
		return fmt.Errorf("invalid size %q (want bytes, e.g. \"50MiB\" or \"0\")", b)
	}
	*z = Size(v)
	return nil
}

// MarshalText formats z in binary units ("50MiB"; "0B" when zero).
func (z Size) MarshalText() ([]byte, error) {
	return []byte(strings.ReplaceAll(units.BytesSize(float64(z)), " ", "")), nil
}

// String is MarshalText's form, for messages.
func (z Size) String() string {
	b, _ := z.MarshalText()
	return string(b)
}

// Duration is a time.Duration written as a string ("250ms") in TOML.
// toml decodes a plain time.Duration from a string but encodes it as an
// integer of nanoseconds, which would make WriteTOML's output unreadable
// to people; this type keeps both directions in the string form.
type Duration time.Duration

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("invalid duration %q", b)
	}
	*d = Duration(v)
	return nil
}

// MarshalText formats d as a Go duration string.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// Std returns d as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// The range checks below name the key, the value and the accepted range.
// Every duration and count has an upper bound as well as a lower one: a
// value is multiplied, doubled or added to a time somewhere, and none of
// that may overflow.

// duration checks lo <= v <= hi.
func (p *problems) duration(key string, v Duration, lo, hi time.Duration) {
	if v.Std() < lo || v.Std() > hi {
		p.add(key, "%v out of range [%v, %v]", v.Std(), lo, hi)
	}
}

// count checks lo <= v <= hi.
func (p *problems) count(key string, v, lo, hi int) {
	if v < lo || v > hi {
		p.add(key, "%d out of range [%d, %d]", v, lo, hi)
	}
}

// positive checks 0 < v <= hi (NaN fails).
func (p *problems) positive(key string, v, hi float64) {
	if !(v > 0 && v <= hi) {
		p.add(key, "%v out of range (0, %v]", v, hi)
	}
}

// listenAddr checks a TCP listen address and returns its host, and
// whether it is good. The form is IP:port, as kubelet's and kube-proxy's
// addresses are: the host an IP literal, "localhost" or empty (every
// address of the node), the port 0 to 65535 (0: any free port, for
// tests). A name other than localhost is refused: the daemon listens at
// boot, before DNS may answer, and a name that resolves differently
// later would move the endpoint.
func (p *problems) listenAddr(key, v string) (host string, ok bool) {
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		p.add(key, "%q is not IP:port (e.g. \"127.0.0.1:10366\"; \"\" is off)", v)
		return "", false
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || port != strconv.FormatUint(n, 10) {
		p.add(key, "%q: port %q is not a number in [0, 65535]", v, port)
		return "", false
	}
	if host != "" && host != "localhost" && net.ParseIP(host) == nil {
		p.add(key, "%q: host %q is not an IP address or localhost", v, host)
		return "", false
	}
	return host, true
}
