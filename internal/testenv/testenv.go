// Package testenv decides what a test does when a real part it needs
// (python3, a JDK with Netty, HAProxy) is missing on the machine: on a
// developer's machine it skips, saying what to install; in CI (CI set, or
// DEVGATE_REQUIRE_ALL=1) it fails, so a suite that passes has run them all.
//
//	if _, err := exec.LookPath("python3"); err != nil {
//		testenv.Missing(t, "python3 not found: cannot run testdata/reference.py")
//	}
package testenv

import (
	"os"
	"testing"
)

// RequireAllEnv makes missing parts fail tests instead of skipping them.
const RequireAllEnv = "DEVGATE_REQUIRE_ALL"

// Required reports whether a missing part fails the test: in CI (CI set
// to anything but "" or "false") or with DEVGATE_REQUIRE_ALL=1.
func Required() bool {
	if v := os.Getenv(RequireAllEnv); v != "" && v != "0" {
		return true
	}
	ci := os.Getenv("CI")
	return ci != "" && ci != "0" && ci != "false"
}

// Missing ends t for want of a real part: a failure when Required, else a
// skip. why says what is missing and how to install it.
func Missing(t testing.TB, why string) {
	t.Helper()
	if Required() {
		t.Fatalf("%s (%s or CI is set: a missing part fails instead of skipping)", why, RequireAllEnv)
	} else {
		t.Skip(why)
	}
}
