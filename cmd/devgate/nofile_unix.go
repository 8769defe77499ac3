//go:build unix

package main

import (
	"fmt"
	"syscall"
)

// raiseNofile raises the soft RLIMIT_NOFILE to the hard limit (the Go
// runtime does it at start on Linux too; done here so that what the check
// reads is what applies) and returns both.
func raiseNofile() (soft, hard uint64, err error) {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0, 0, fmt.Errorf("getrlimit: %w", err)
	}
	if r.Cur < r.Max {
		want := r
		want.Cur = r.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
			return uint64(r.Cur), uint64(r.Max), fmt.Errorf("setrlimit nofile %d: %w", r.Max, err)
		}
		r = want
	}
	return uint64(r.Cur), uint64(r.Max), nil
}
