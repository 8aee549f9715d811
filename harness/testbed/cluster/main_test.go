package cluster_test

import (
	"testing"

	"go.uber.org/goleak"
)

// A cluster owns one goroutine per process (reaping it) and Stop waits
// for each; the admin client's connections are closed by Stop.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
