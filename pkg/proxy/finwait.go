package proxy

import (
	"errors"
	"net"
	"os"
	"sync/atomic"
	"time"
)

// A half-closed pair (one side sent FIN, the other keeps its side open) is
// bounded by a FIN timeout (Proxy.ClientFinTimeout, ServerFinTimeout): when
// direction d ends, the direction still running reads under a deadline and
// the pair is closed once nothing moved for the timeout. The loops keep
// these deadlines in FIFO queues (loop_copy_linux.go); here they are read
// deadlines on the socket the remaining direction reads.

// errFinTimeout ends the remaining direction of a half-closed pair.
var errFinTimeout = errors.New("proxy: half-closed pair idle for the FIN timeout")

// dirOf is the direction whose clean end is counted as eofReason (0: client
// to backend).
func dirOf(eofReason Reason) int {
	if eofReason == ReasonClientClosed {
		return 0
	}
	return 1
}

// armFinWait starts the FIN timeout after direction d ended: other is the
// socket the other direction reads.
func (c *conn) armFinWait(d int, other net.Conn) {
	if w := c.finWait[d]; w > 0 {
		c.finArmed[d].Store(true)
		other.SetReadDeadline(time.Now().Add(w))
	}
}

// finWaitOn is the FIN timeout direction d runs under: the other
// direction's, once that one has ended (0: none).
func (c *conn) finWaitOn(d int) time.Duration {
	if c.finArmed[1-d].Load() {
		return c.finWait[1-d]
	}
	return 0
}

// idleOrFin is the quiet time direction d may see with an idle timeout:
// after the other side's FIN, the FIN timeout if shorter (fin true).
func idleOrFin(c *conn, d int, idle time.Duration) (wait time.Duration, fin bool) {
	if w := c.finWaitOn(d); w > 0 && w < idle {
		return w, true
	}
	return idle, false
}

// copyFinWait is copyCounted(dst, src, count) for direction d that, once the other
// direction ended, returns errFinTimeout when nothing moved for a FIN
// timeout (so within twice it: the first period may count older bytes).
func copyFinWait(c *conn, dst, src net.Conn, d int, count *atomic.Uint64) (int64, error) {
	var total int64
	for {
		n, err := copyCounted(dst, src, count)
		total += n
		w := c.finWaitOn(d)
		if err == nil || w == 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
			return total, err
		}
		if n == 0 {
			return total, errFinTimeout
		}
		src.SetReadDeadline(time.Now().Add(w))
	}
}
