package testbed

import (
	"bytes"
	"fmt"
	"os"
)

// WithLogTail appends about the last 4 KiB of the log at path to err, from
// a line start: what a process that failed to start, or died, said last.
// err comes back unchanged when the log is missing or empty.
func WithLogTail(err error, path string) error {
	tail, terr := tailOf(path, 4<<10)
	if terr != nil || len(tail) == 0 {
		return err
	}
	return fmt.Errorf("%w\n--- tail of %s ---\n%s", err, path, tail)
}

// tailOf returns about the last n bytes of the file at path, from the
// first line start among them.
func tailOf(path string, n int64) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > n {
		b = b[int64(len(b))-n:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return b, nil
}
