//go:build !linux

package proxy

import "syscall"

// bindNoPort does nothing where IP_BIND_ADDRESS_NO_PORT is missing: the
// bind reserves a port per connection.
func bindNoPort(_, _ string, _ syscall.RawConn) error { return nil }
