package registry

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that every test of the package stopped its goroutines.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
