package daemon

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

// childEnv makes the test binary run startgated instead of the tests, so
// that the socket-activation test can exec a real daemon without a
// separate go build.
const childEnv = "STARTGATED_TEST_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		os.Exit(Main(os.Args[1:]))
	}
	goleak.VerifyTestMain(m)
}
