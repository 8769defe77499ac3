package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/devgate/devgate/pkg/frame"
	"github.com/devgate/devgate/pkg/ring"
)

// prereadPool holds the small first buffers; most login frames fit, and a
// buffer only grows (up to the matcher's cap) for the rare larger one.
var prereadPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// handle owns one accepted client from preread to close.
func (p *Proxy) handle(c net.Conn) {
	defer p.wg.Done()
	defer p.stats.active.Add(-1)
	p.setKeepAlive(c)

	bp := prereadPool.Get().(*[]byte)
	start := time.Now()
	buf, key, err := p.preread(c, (*bp)[:0])
	p.endPreread(c)
	if p.OnPreread != nil {
		p.OnPreread(time.Since(start))
	}
	if err != nil {
		p.reject(c, err, buf)
		p.putBuf(bp, buf)
		return
	}
	device := string(key) // key aliases buf, which goes back to the pool

	r := p.Source.Ring()
	b, backend, reason := p.dial(r, key)
	if backend == nil {
		p.putBuf(bp, buf)
		c.Close()
		p.stats.close(reason)
		p.badLog.Warn("connection refused", zap.String("reason", reason),
			zap.String("device", sanitize(device)), zap.Stringer("client", c.RemoteAddr()))
		return
	}
	// Every byte read before routing goes to the backend first, unchanged.
	_, err = backend.Write(buf)
	p.stats.bytesIn.Add(uint64(len(buf)))
	p.putBuf(bp, buf)
	if err != nil {
		c.Close()
		backend.Close()
		p.stats.close(ReasonBackendWrite)
		p.badLog.Warn("write to backend failed", zap.String("backend", b.ID), zap.Error(err))
		return
	}
	p.setKeepAlive(backend)

	pc := &conn{client: c, backend: backend, device: device, backendID: b.ID, since: time.Now()}
	p.stats.routed.Add(1)
	p.stats.proxied.Add(1)
	p.table.add(pc)
	if old, moved := p.devices.login(pc); old != nil || moved {
		if moved {
			p.stats.moved.Add(1)
		}
		if old != nil && !p.KeepDuplicates {
			old.close(ReasonReplaced)
		}
	}
	if p.isClosing() { // Shutdown may have walked the table before add
		pc.close(ReasonShutdown)
	}

	in, out := p.pipe(pc)

	p.devices.logout(pc)
	p.table.remove(pc)
	p.stats.proxied.Add(-1)
	p.stats.bytesIn.Add(uint64(in))
	p.stats.bytesOut.Add(uint64(out))
	p.stats.close(pc.endReason())
}

func (p *Proxy) putBuf(bp *[]byte, buf []byte) {
	if cap(buf) > 4096 { // do not let one large frame pin memory in the pool
		buf = make([]byte, 0, 512)
	}
	*bp = buf[:0]
	prereadPool.Put(bp)
}

func (p *Proxy) endPreread(c net.Conn) {
	p.mu.Lock()
	delete(p.prereads, c)
	p.mu.Unlock()
}

// preread reads until the matcher finds the key, under the deadline and the
// matcher's byte cap. The returned buf holds every byte read.
func (p *Proxy) preread(c net.Conn, buf []byte) ([]byte, []byte, error) {
	if err := c.SetReadDeadline(time.Now().Add(p.prereadTimeout())); err != nil {
		return buf, nil, err
	}
	limit := p.Matcher.PrereadLimit()
	for {
		if len(buf) >= limit {
			return buf, nil, frame.ErrPrereadCap
		}
		if len(buf) == cap(buf) {
			nb := make([]byte, len(buf), min(max(2*cap(buf), 512), limit))
			copy(nb, buf)
			buf = nb
		}
		n, err := c.Read(buf[len(buf):min(cap(buf), limit)])
		buf = buf[:len(buf)+n]
		if n > 0 {
			key, ferr := p.Matcher.Find(buf)
			if ferr == nil {
				return buf, key, c.SetReadDeadline(time.Time{})
			}
			if !errors.Is(ferr, frame.ErrShort) {
				return buf, nil, ferr
			}
		}
		if err != nil {
			return buf, nil, err
		}
	}
}

// reject closes a client whose preread failed and counts the reason.
func (p *Proxy) reject(c net.Conn, err error, buf []byte) {
	reason := prereadReason(err, len(buf))
	c.Close()
	p.stats.close(reason)
	if reason == ReasonEmpty || reason == ReasonShutdown {
		return
	}
	p.badLog.Info("bad first frame", zap.String("reason", reason), zap.Int("bytes", len(buf)),
		zap.Stringer("client", c.RemoteAddr()), zap.Error(err))
}

func prereadReason(err error, n int) string {
	var ne net.Error
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout():
		return ReasonPrereadTimeout
	case errors.Is(err, io.EOF) && n == 0:
		return ReasonEmpty
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), isReset(err):
		return ReasonClientGone
	case errors.Is(err, net.ErrClosed):
		return ReasonShutdown
	}
	if r := frame.Reason(err); r != "other" {
		return r
	}
	return ReasonReadError
}

// dial tries the key's owners in ring order. It returns the backend reached
// and its connection, or the reason nothing was reached.
func (p *Proxy) dial(r ring.Ring, key []byte) (ring.Backend, net.Conn, string) {
	if r == nil || r.Len() == 0 {
		return ring.Backend{}, nil, ReasonNoBackends
	}
	var stack [8]int
	owners := r.Owners(key, p.maxTries(), stack[:0])
	backends := r.Backends()
	for i, idx := range owners {
		b := backends[idx]
		ctx, cancel := context.WithTimeout(context.Background(), p.dialTimeout())
		bc, err := p.dialer(ctx, "tcp", b.Addr)
		cancel()
		if err == nil {
			if i > 0 {
				p.stats.fallbacks.Add(1)
			}
			return b, bc, ""
		}
		p.stats.dialFailures.Add(1)
		p.badLog.Warn("dial backend failed", zap.String("backend", b.ID), zap.String("addr", b.Addr),
			zap.Int("try", i+1), zap.Error(err))
	}
	return ring.Backend{}, nil, ReasonDialFailed
}

func (p *Proxy) dialer(ctx context.Context, network, addr string) (net.Conn, error) {
	if p.Dial != nil {
		return p.Dial(ctx, network, addr)
	}
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

func (p *Proxy) setKeepAlive(c net.Conn) {
	tc, ok := c.(*net.TCPConn)
	if !ok || p.KeepAlive < 0 {
		return
	}
	idle := orDuration(p.KeepAlive, 30*time.Second)
	_ = tc.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: idle, Interval: idle / 3, Count: 3})
}
