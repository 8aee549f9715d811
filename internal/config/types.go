package config

import (
	"fmt"
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
