package proxy

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// pipe copies both ways until both directions end, honouring half-close:
// when one side stops sending, the other side's write half is shut and the
// opposite direction goes on. It returns bytes client->backend and back.
func (p *Proxy) pipe(c *conn) (in, out int64) {
	if p.IdleTimeout > 0 {
		return p.pipeIdle(c)
	}
	done := make(chan int64, 1)
	go func() { done <- copyBackendToClient(c) }()
	in = copyClientToBackend(c)
	out = <-done
	c.close(ReasonClientClosed) // no-op for the reason if one was set
	return in, out
}

// Named so stack dumps show which way a stuck copy runs.
func copyClientToBackend(c *conn) int64 {
	return copyHalf(c, c.backend, c.client, &c.n[0], ReasonClientClosed)
}

func copyBackendToClient(c *conn) int64 {
	return copyHalf(c, c.client, c.backend, &c.n[1], ReasonBackendClosed)
}

// copyHalf copies src to dst, counting into count as it goes. Between two
// *net.TCPConn it splices in the kernel. A clean EOF half-closes dst; an
// error tears both sides down so the other direction returns too.
func copyHalf(c *conn, dst, src net.Conn, count *atomic.Uint64, eofReason string) int64 {
	d := dirOf(eofReason)
	n, err := copyFinWait(c, dst, src, d, count)
	if err == nil {
		c.setReason(eofReason)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
			c.armFinWait(d, dst)
			return n
		}
	} else {
		if errors.Is(err, errFinTimeout) {
			c.finTimedOut(1 - d)
		}
		c.setReason(eofReason) // a reset reads as the same side going away
	}
	c.close(eofReason)
	return n
}

// pipeIdle is pipe with an idle timeout: each direction reads under a
// deadline and, when it fires, closes the connection only if the other
// direction was quiet too. It copies through pooled buffers, so it costs
// more memory than the splice path; it runs only when IdleTimeout is set.
func (p *Proxy) pipeIdle(c *conn) (in, out int64) {
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	done := make(chan int64, 1)
	go func() { done <- copyIdle(c, c.client, c.backend, p.IdleTimeout, &last, &c.n[1], ReasonBackendClosed) }()
	in = copyIdle(c, c.backend, c.client, p.IdleTimeout, &last, &c.n[0], ReasonClientClosed)
	out = <-done
	c.close(ReasonClientClosed)
	return in, out
}

var idleBufPool = sync.Pool{New: func() any { b := make([]byte, 4096); return &b }}

func copyIdle(c *conn, dst, src net.Conn, idle time.Duration, last *atomic.Int64, count *atomic.Uint64, eofReason string) int64 {
	bp := idleBufPool.Get().(*[]byte)
	defer idleBufPool.Put(bp)
	d := dirOf(eofReason)
	var total int64
	for {
		wait, fin := idleOrFin(c, d, idle)
		src.SetReadDeadline(time.Now().Add(wait))
		n, err := src.Read(*bp)
		if n > 0 {
			last.Store(time.Now().UnixNano())
			w, werr := dst.Write((*bp)[:n])
			count.Add(uint64(w))
			total += int64(w)
			if werr != nil {
				c.close(eofReason)
				return total
			}
		}
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			wait, fin = idleOrFin(c, d, idle) // the FIN may have come meanwhile
			if time.Since(time.Unix(0, last.Load())) < wait {
				continue // the other direction is busy
			}
			if fin {
				c.finTimedOut(1 - d)
			}
			c.close(ReasonIdleTimeout)
			return total
		}
		if errors.Is(err, io.EOF) {
			c.setReason(eofReason)
			if cw, ok := dst.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
				c.armFinWait(d, dst)
				return total
			}
		}
		c.close(eofReason)
		return total
	}
}

func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}
