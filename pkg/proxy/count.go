package proxy

import (
	"io"
	"net"
	"sync/atomic"
)

// Bytes are counted as they are copied, so devgate_bytes_total moves while
// connections that live for days are open, without a shared counter on
// the hot path: the goroutine path adds to its connection's own counters
// (conn.n), folded into the table's totals when the connection ends; each
// event loop adds to its own (evBytes). Stats sums them.

// bytesCopied returns the bytes the copy paths moved so far, client to
// backend and back, of closed and open connections.
func (p *Proxy) bytesCopied() (in, out uint64) {
	in, out = p.table.bytes()
	lin, lout := p.loops.bytes()
	return in + lin, out + lout
}

// countWriter counts what it writes into n. It hides any ReadFrom of w,
// so it is only for copies that go through a buffer anyway.
type countWriter struct {
	w io.Writer
	n *atomic.Uint64
}

func (cw countWriter) Write(b []byte) (int, error) {
	n, err := cw.w.Write(b)
	cw.n.Add(uint64(n))
	return n, err
}

// copyBuffered is io.Copy that counts into n as it goes.
func copyBuffered(dst, src net.Conn, n *atomic.Uint64) (int64, error) {
	return io.Copy(countWriter{dst, n}, src)
}
