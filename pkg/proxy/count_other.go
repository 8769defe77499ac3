//go:build !linux

package proxy

import (
	"net"
	"sync/atomic"
)

// copyCounted copies src to dst until EOF or an error, adding to n as each
// chunk is written.
func copyCounted(dst, src net.Conn, n *atomic.Uint64) (int64, error) {
	return copyBuffered(dst, src, n)
}
