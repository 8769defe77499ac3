//go:build unix

package proxy

import "syscall"

// nofileLimit is the soft RLIMIT_NOFILE (0: unknown).
func nofileLimit() uint64 {
	var r syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r) != nil {
		return 0
	}
	return uint64(r.Cur)
}
