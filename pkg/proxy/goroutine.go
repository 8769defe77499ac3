package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/devgate/devgate/pkg/ring"
)

// serveConn owns one accepted client from preread to close. When the
// connection is handed to an event loop (the default), serveConn returns
// once the loop has it, and the loop ends it.
func (p *Proxy) serveConn(c net.Conn, inheritsKeepAlive bool) {
	if !inheritsKeepAlive {
		p.setKeepAlive(c)
	}

	bp := prereadPool.Get().(*[]byte)
	start := time.Now()
	client, src, buf, key, release, err := p.admit(c, (*bp)[:0])
	p.endPreread(c)
	if p.OnPreread != nil {
		p.OnPreread(time.Since(start))
	}
	if err != nil {
		client.Close()
		p.end(ending{err: err, n: len(buf), client: client.RemoteAddr(), release: release})
		p.putBuf(bp, buf)
		return
	}
	device := string(key) // key aliases buf, which goes back to the pool
	if reason := p.flapWait(device); reason != "" {
		client.Close()
		p.end(ending{reason: reason, device: device, client: src, release: release})
		p.putBuf(bp, buf)
		return
	}

	r := p.Source.Ring()
	b, backend, first, reason := p.dial(r, key, sendPreread{buf: buf, src: src, local: c.LocalAddr()})
	var lg *session
	var tries uint8
	if backend != nil {
		lg = p.newLogin(buf, first, addrPort(src))
		tries = ownerRank(r, key, b.ID) // key goes back to the pool with buf
	}
	p.putBuf(bp, buf)
	if backend == nil {
		client.Close()
		p.end(ending{reason: reason, device: device, client: src, release: release})
		return
	}
	p.setKeepAlive(backend)

	pc := &conn{client: client, backend: backend, device: device, backendID: b.ID, since: time.Now(),
		finWait: p.finTimeouts(), lg: lg, remote: packAddr(addrPort(src)), tries: tries}
	if p.useEventLoop(client, backend) { // before the table can hand pc to close
		if pc.ev, err = p.newEvPair(pc, release); err != nil {
			p.badLog.Warn("copying with goroutines", zap.Error(err))
		}
	}
	if pc.ev == nil && lg != nil { // before the table can hand pc to close
		if p.rehomeOn() {
			pc.gm = p.newGoMove(pc, backend)
		} else {
			pc.lg = nil // tracked only for the notice, which goroutines do not write (notice.go)
		}
	}
	p.routedConn(pc)
	// The backend's first bytes reach the device only once the connection
	// is in the table, where Shutdown and Evict find it.
	if len(first) > 0 {
		if _, err := client.Write(first); err != nil {
			pc.close(ReasonClientClosed)
		}
		p.stats.bytesOut.Add(uint64(len(first)))
	}

	if pc.ev != nil {
		p.handOff(pc.ev) // the loop ends it
		return
	}
	p.pipe(pc)
	p.end(ending{pc: pc, release: release})
}

// dial tries the key's owners in ring order and sends each one reached the
// preread bytes (p.send). It returns the backend that took them, its
// connection and its first bytes if they came already, or the reason
// nothing was reached. A backend that resets or closes before its first
// byte counts as a failed dial, as a refused connect does.
func (p *Proxy) dial(r ring.Ring, key []byte, s sendPreread) (ring.Backend, net.Conn, []byte, Reason) {
	if r == nil || r.Len() == 0 {
		return ring.Backend{}, nil, nil, ReasonNoBackends
	}
	var stack [8]int
	owners := r.Owners(key, p.maxTries(), stack[:0])
	backends := r.Backends()
	var waitUntil time.Time
	for i, idx := range owners {
		b := backends[idx]
		if p.ejectSkip(b, i == len(owners)-1) {
			continue
		}
		pc, reason := p.waitTurn(b, &waitUntil) // pacing.go: the owner dialled waits its turn
		if reason != "" {
			return ring.Backend{}, nil, nil, reason
		}
		ctx, cancel := context.WithTimeout(context.Background(), p.dialTimeout())
		bc, err := p.dialer(ctx, "tcp", b.Addr)
		cancel()
		var first []byte
		if err == nil {
			if first, err = p.send(s, b, bc); err == nil {
				p.stats.bytesIn.Add(uint64(len(s.buf)))
				if i > 0 {
					p.stats.fallbacks.Add(1)
				}
				p.ejectSucceeded(b.ID, true)
				return b, bc, first, ""
			}
			bc.Close()
			if reason := sendFailReason(err); reason != "" {
				p.badLog.Warn("write to backend failed", zap.String("backend", b.ID), zap.Error(err))
				return b, nil, nil, reason
			}
		}
		pc.giveBack()
		p.countDialFailure(b, i+1, err)
	}
	return ring.Backend{}, nil, nil, ReasonDialFailed
}

// countDialFailure counts and logs a failed dial, the try-th of a connection.
func (p *Proxy) countDialFailure(b ring.Backend, try int, err error) {
	p.stats.dialFailures.Add(1)
	p.ejectFailed(b, err)
	p.badLog.Warn("dial backend failed", zap.String("backend", b.ID), zap.String("addr", b.Addr),
		zap.Int("try", try), zap.Error(err))
}

func (p *Proxy) dialer(ctx context.Context, network, addr string) (net.Conn, error) {
	if p.Dial != nil {
		return p.Dial(ctx, network, addr)
	}
	if p.BackendTLS != nil {
		d := tls.Dialer{Config: p.BackendTLS}
		return d.DialContext(ctx, network, addr)
	}
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

func (p *Proxy) setKeepAlive(c net.Conn) {
	tc, ok := c.(*net.TCPConn)
	if !ok || p.KeepAlive < 0 {
		return
	}
	idle := keepAliveIdle(p.KeepAlive)
	_ = tc.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: idle, Interval: idle / 3, Count: 3})
}

// pipe copies both ways until both directions end, honouring half-close:
// when one side stops sending, the other side's write half is shut and the
// opposite direction goes on. It returns bytes client->backend and back.
func (p *Proxy) pipe(c *conn) (in, out int64) {
	if c.gm != nil {
		return p.pipeMove(c)
	}
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
func copyHalf(c *conn, dst, src net.Conn, count *atomic.Uint64, eofReason Reason) int64 {
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

func copyIdle(c *conn, dst, src net.Conn, idle time.Duration, last *atomic.Int64, count *atomic.Uint64, eofReason Reason) int64 {
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
