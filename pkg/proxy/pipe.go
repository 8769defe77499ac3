package proxy

import (
	"errors"
	"io"
	"net"
	"syscall"
)

// pipe copies both ways until both directions end, honouring half-close:
// when one side stops sending, the other side's write half is shut and the
// opposite direction goes on. It returns bytes client->backend and back.
func (p *Proxy) pipe(c *conn) (in, out int64) {
	done := make(chan int64, 1)
	go func() { done <- copyBackendToClient(c) }()
	in = copyClientToBackend(c)
	out = <-done
	c.close(ReasonClientClosed) // no-op for the reason if one was set
	return in, out
}

// Named so stack dumps show which way a stuck copy runs.
func copyClientToBackend(c *conn) int64 {
	return copyHalf(c, c.backend, c.client, ReasonClientClosed)
}

func copyBackendToClient(c *conn) int64 {
	return copyHalf(c, c.client, c.backend, ReasonBackendClosed)
}

// copyHalf copies src to dst. Between two *net.TCPConn io.Copy splices in
// the kernel. A clean EOF half-closes dst; an error tears both sides down so
// the other direction returns too.
func copyHalf(c *conn, dst, src net.Conn, eofReason string) int64 {
	n, err := io.Copy(dst, src)
	if err == nil {
		c.setReason(eofReason)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
			return n
		}
	} else {
		c.setReason(eofReason) // a reset reads as the same side going away
	}
	c.close(eofReason)
	return n
}

func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}
