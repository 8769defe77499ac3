//go:build !linux

package proxy

import (
	"net"
	"syscall"
)

// rawConnOf: off Linux idleReader keeps its buffer.
func rawConnOf(net.Conn) syscall.RawConn { return nil }

func peekReady(uintptr) bool { return true }
