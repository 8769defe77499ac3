package main

import (
	"fmt"
	"testing"
)

func TestLoadShares(t *testing.T) {
	for _, tc := range []struct {
		n, per int
		want   string
	}{
		{9000, 5000, "[4500 4500]"},
		{10001, 5000, "[3334 3334 3333]"},
		{600, 5000, "[600]"},
	} {
		if got := fmt.Sprint(loadShares(tc.n, tc.per)); got != tc.want {
			t.Errorf("loadShares(%d, %d) = %s, want %s", tc.n, tc.per, got, tc.want)
		}
	}
}
