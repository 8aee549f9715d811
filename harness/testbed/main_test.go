package testbed

import (
	"testing"

	"go.uber.org/goleak"
)

// Start owns one goroutine per testbed (reaping containerd) and Stop waits
// for it; the gRPC connections are closed by Stop and the tests.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
