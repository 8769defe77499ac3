package opt

import (
	"testing"
	"time"
)

func TestOrAndOrNone(t *testing.T) {
	if got := Or(0, 3); got != 3 {
		t.Errorf("Or(0, 3) = %d", got)
	}
	if got := Or(-time.Second, time.Minute); got != time.Minute {
		t.Errorf("Or(-1s, 1m) = %v", got)
	}
	if got := Or(2.5, 1); got != 2.5 {
		t.Errorf("Or(2.5, 1) = %v", got)
	}
	if got := OrNone(0, 10000); got != 10000 {
		t.Errorf("OrNone(0, 10000) = %d", got)
	}
	if got := OrNone(-1.0, 1000); got != 0 {
		t.Errorf("OrNone(-1, 1000) = %v", got)
	}
	if got := OrNone(7, 10000); got != 7 {
		t.Errorf("OrNone(7, 10000) = %d", got)
	}
}
