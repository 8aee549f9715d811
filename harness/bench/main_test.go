package bench

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

// The smoke test runs startgated as this test binary re-executed
// (RunChild); every goroutine Run starts must be gone when it returns.
func TestMain(m *testing.M) {
	if code, ok := RunChild(); ok {
		os.Exit(code)
	}
	goleak.VerifyTestMain(m)
}
