package testenv

import (
	"testing"
)

func TestRequired(t *testing.T) {
	for _, tc := range []struct {
		ci, all string
		want    bool
	}{
		{"", "", false}, {"false", "", false}, {"0", "0", false},
		{"true", "", true}, {"1", "", true}, {"", "1", true}, {"false", "1", true},
	} {
		t.Setenv("CI", tc.ci)
		t.Setenv(RequireAllEnv, tc.all)
		if got := Required(); got != tc.want {
			t.Errorf("CI=%q %s=%q: Required() = %v, want %v", tc.ci, RequireAllEnv, tc.all, got, tc.want)
		}
	}
}

// fakeT records how Missing ended a test.
type fakeT struct {
	testing.TB
	failed, skipped bool
}

func (f *fakeT) Helper()               {}
func (f *fakeT) Fatalf(string, ...any) { f.failed = true }
func (f *fakeT) Skip(...any)           { f.skipped = true }

func TestMissing(t *testing.T) {
	t.Setenv("CI", "")
	t.Setenv(RequireAllEnv, "")
	var f fakeT
	Missing(&f, "python3 not found")
	if !f.skipped || f.failed {
		t.Errorf("on a developer's machine: skipped %v, failed %v; want a skip", f.skipped, f.failed)
	}
	t.Setenv(RequireAllEnv, "1")
	f = fakeT{}
	Missing(&f, "python3 not found")
	if !f.failed || f.skipped {
		t.Errorf("with %s=1: skipped %v, failed %v; want a failure", RequireAllEnv, f.skipped, f.failed)
	}
}
