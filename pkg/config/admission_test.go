package config

import (
	"strings"
	"testing"
	"time"
)

func TestAdmissionDefaultsAndSet(t *testing.T) {
	c, err := Parse([]byte(oneBackend))
	if err != nil {
		t.Fatal(err)
	}
	if a := c.Admission; a.LoginsPerSecond != 0 || a.MaxWaitOr() != 30*time.Second || a.SlowStartOr() != 60*time.Second {
		t.Fatalf("defaults: %v %v %v", a.LoginsPerSecond, a.MaxWaitOr(), a.SlowStartOr())
	}
	c, err = Parse([]byte(oneBackend + "admission: {loginsPerSecond: 100, maxWait: 5s, slowStart: 0s}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if a := c.Admission; a.LoginsPerSecond != 100 || a.MaxWaitOr() != 5*time.Second || a.SlowStartOr() != 0 {
		t.Fatalf("set: %v %v %v", a.LoginsPerSecond, a.MaxWaitOr(), a.SlowStartOr())
	}
}

// Each bad value is refused with the key and what is wrong.
func TestAdmissionRefused(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"admission: {loginsPerSecond: -1}", "admission.loginsPerSecond -1: want 0 (none) up to 1e+06"},
		{"admission: {loginsPerSecond: 2e6}", "admission.loginsPerSecond 2e+06"},
		{"admission: {maxWait: -1s}", "negative duration -1s"},
		{"admission: {maxWait: 1h}", "admission.maxWait 1h0m0s: want at most 10m0s"},
		{"admission: {slowStart: 2h}", "admission.slowStart 2h0m0s: want 0s (none) up to 1h0m0s"},
		{"admission: {slowstart: 1s}", `unknown field "slowstart" in admission (did you mean "slowStart"?)`},
	} {
		_, err := Parse([]byte(oneBackend + tc.yaml + "\n"))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", tc.yaml, err, tc.want)
		}
	}
}
