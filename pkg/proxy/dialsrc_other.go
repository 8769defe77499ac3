//go:build !linux

package proxy

import (
	"net/netip"
	"syscall"
)

// bindNoPort does nothing where IP_BIND_ADDRESS_NO_PORT is missing: the
// bind reserves a port per connection.
func bindNoPort(_, _ string, _ syscall.RawConn) error { return nil }

// CheckSourceAddrs checks nothing where sources are not bound ahead.
func CheckSourceAddrs([]netip.Addr) error { return nil }
