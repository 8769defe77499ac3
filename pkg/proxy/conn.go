package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
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
// When the connection is handed to an event loop (EventLoop), handle
// returns once it is registered and the loop calls finish at the end.
func (p *Proxy) handle(c net.Conn, inheritsKeepAlive bool) {
	var release func()
	handedOff := false
	defer func() {
		if !handedOff {
			p.endConn(release)
		}
	}()
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
		p.reject(client, err, buf)
		p.putBuf(bp, buf)
		return
	}
	device := string(key) // key aliases buf, which goes back to the pool

	r := p.Source.Ring()
	b, backend, first, reason := p.dial(r, key, sendPreread{buf: buf, src: src, local: c.LocalAddr()})
	p.putBuf(bp, buf)
	if backend == nil {
		client.Close()
		p.refused(reason, device, src)
		return
	}
	p.setKeepAlive(backend)

	pc := &conn{client: client, backend: backend, device: device, backendID: b.ID, since: time.Now(),
		finWait: p.finTimeouts()}
	if p.useEventLoop(client, backend) { // before the table can hand pc to close
		if pc.ev, err = p.newEvPair(pc, release); err != nil {
			p.badLog.Warn("copying with goroutines", zap.Error(err))
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
		p.evAttach(pc.ev)
		handedOff = true // the loop calls finish and endConn
		return
	}
	p.pipe(pc)
	p.finish(pc)
}

// routedConn accounts for a connection just routed: counters, the table,
// the device cache (closing the device's older connection).
func (p *Proxy) routedConn(pc *conn) {
	p.stats.routed.Add(1)
	p.trackRouted(pc)
}

// trackRouted is routedConn without counting it as routed (a pair that
// fell back to another owner was counted once).
func (p *Proxy) trackRouted(pc *conn) {
	p.stats.proxied.Add(1)
	p.table.add(pc)
	if old, moved := p.devices.login(pc); old != nil || moved {
		if moved && !pc.moved { // a fallback counts a device's move once
			pc.moved = true
			p.stats.moved.Add(1)
		}
		if old != nil && !p.KeepDuplicates {
			old.close(ReasonReplaced)
		}
	}
	if p.isClosing() { // Shutdown may have walked the table before add
		pc.close(ReasonShutdown)
	}
}

// untrackRouted undoes trackRouted for a pair that falls back to another
// owner before any byte moved.
func (p *Proxy) untrackRouted(pc *conn) {
	p.devices.restore(pc)
	p.table.remove(pc)
	p.stats.proxied.Add(-1)
}

// finish accounts for a proxied connection once both directions ended
// (its bytes were counted as they were copied).
func (p *Proxy) finish(pc *conn) {
	p.devices.logout(pc)
	p.table.remove(pc)
	p.stats.proxied.Add(-1)
	p.stats.close(pc.endReason())
}

// endConn releases what startConn and admit took for a connection.
func (p *Proxy) endConn(release func()) {
	if release != nil {
		release()
	}
	p.stats.active.Add(-1)
	p.wg.Done()
}

// admit takes a new connection through the steps before routing, all under
// the preread deadline: the PROXY header (from trusted balancers), the
// per-address limits, the TLS handshake, and the key frame. It returns the
// connection to talk to the device on, the device's address, every byte
// read after the PROXY header, the key, and the release of the per-address
// slot (nil when none was taken).
func (p *Proxy) admit(c net.Conn, buf []byte) (client net.Conn, src net.Addr, _ []byte, key []byte, release func(), err error) {
	client, src = c, c.RemoteAddr()
	if err = c.SetReadDeadline(time.Now().Add(p.prereadTimeout())); err != nil {
		return client, src, buf, nil, nil, err
	}
	if len(p.TrustedProxies) > 0 {
		if buf, src, err = p.readProxyHeader(c, buf); err != nil {
			return client, src, buf, nil, nil, err
		}
	}
	if release, err = p.acquireIP(addrIP(src)); err != nil {
		return client, src, buf, nil, nil, err
	}
	if p.TLS != nil {
		tc := tls.Server(&prefixConn{Conn: c, prefix: buf}, p.TLS)
		client, buf = tc, buf[:0]
		if err = tc.Handshake(); err != nil {
			return client, src, buf, nil, release, &tlsError{err}
		}
	}
	buf, key, err = p.preread(client, buf)
	return client, src, buf, key, release, err
}

// limitError carries the reason a per-address limit refused a connection.
type limitError string

func (e limitError) Error() string { return "proxy: refused by limit " + string(e) }

type tlsError struct{ err error }

func (e *tlsError) Error() string { return "tls handshake: " + e.err.Error() }
func (e *tlsError) Unwrap() error { return e.err }

// prefixConn replays bytes read before a TLS handshake (after a PROXY
// header) ahead of the socket.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(b []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(b, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(b)
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

// preread reads until the matcher finds the key, under the deadline admit
// set and the matcher's byte cap. buf may already hold bytes; the returned
// buf holds every byte read.
func (p *Proxy) preread(c net.Conn, buf []byte) ([]byte, []byte, error) {
	limit := p.Matcher.PrereadLimit()
	// With trusted balancers readProxyHeader looked for a PROXY header.
	sigCheck := len(p.TrustedProxies) == 0
	if len(buf) > 0 { // bytes that came with a PROXY header
		if key, ferr := p.Matcher.Find(buf); ferr == nil {
			return buf, key, c.SetReadDeadline(time.Time{})
		} else if !errors.Is(ferr, frame.ErrShort) {
			return buf, nil, ferr
		}
	}
	for {
		if len(buf) >= limit {
			return buf, nil, frame.ErrPrereadCap
		}
		buf = growPreread(buf, limit)
		n, err := c.Read(buf[len(buf):min(cap(buf), limit)])
		buf = buf[:len(buf)+n]
		if sigCheck && n > 0 {
			if serr := unexpectedProxyHeader(buf); serr != nil {
				return buf, nil, serr
			}
		}
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

// growPreread doubles a full preread buffer, up to limit bytes.
func growPreread(buf []byte, limit int) []byte {
	if len(buf) < cap(buf) {
		return buf
	}
	nb := make([]byte, len(buf), min(max(2*cap(buf), 512), limit))
	copy(nb, buf)
	return nb
}

// reject closes a client whose preread failed and counts the reason.
func (p *Proxy) reject(c net.Conn, err error, buf []byte) {
	c.Close()
	p.rejected(err, len(buf), c.RemoteAddr())
}

// refused counts and logs a client closed after its key was read but
// before it reached a backend.
func (p *Proxy) refused(reason, device string, client fmt.Stringer) {
	p.stats.close(reason)
	if reason != ReasonShutdown && reason != ReasonClientGone {
		p.badLog.Warn("connection refused", zap.String("reason", reason),
			zap.String("device", sanitize(device)), zap.Stringer("client", client))
	}
}

// rejected counts and logs a client closed before routing, n bytes read.
func (p *Proxy) rejected(err error, n int, client fmt.Stringer) {
	reason := prereadReason(err, n)
	p.stats.close(reason)
	if reason == ReasonEmpty || reason == ReasonShutdown {
		return
	}
	p.badLog.Info("bad first frame", zap.String("reason", reason), zap.Int("bytes", n),
		zap.Stringer("client", client), zap.Error(err))
}

func prereadReason(err error, n int) string {
	var ne net.Error
	var le limitError
	var te *tlsError
	switch {
	case errors.As(err, &le):
		return string(le)
	case errors.As(err, &te):
		return ReasonTLSHandshake
	case errors.Is(err, ErrProxyUntrusted):
		return ReasonProxyUntrusted
	case errors.Is(err, ErrProxyHeader):
		return ReasonProxyHeader
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

// dial tries the key's owners in ring order and sends each one reached the
// preread bytes (p.send). It returns the backend that took them, its
// connection and its first bytes if they came already, or the reason
// nothing was reached. A backend that resets or closes before its first
// byte counts as a failed dial, as a refused connect does.
func (p *Proxy) dial(r ring.Ring, key []byte, s sendPreread) (ring.Backend, net.Conn, []byte, string) {
	if r == nil || r.Len() == 0 {
		return ring.Backend{}, nil, nil, ReasonNoBackends
	}
	var stack [8]int
	owners := r.Owners(key, p.maxTries(), stack[:0])
	backends := r.Backends()
	for i, idx := range owners {
		b := backends[idx]
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
				return b, bc, first, ""
			}
			bc.Close()
			if reason := sendFailReason(err); reason != "" {
				p.badLog.Warn("write to backend failed", zap.String("backend", b.ID), zap.Error(err))
				return b, nil, nil, reason
			}
		}
		p.dialFailed(b, i+1, err)
	}
	return ring.Backend{}, nil, nil, ReasonDialFailed
}

// dialFailed counts and logs a failed dial, the try-th of a connection.
func (p *Proxy) dialFailed(b ring.Backend, try int, err error) {
	p.stats.dialFailures.Add(1)
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

// DefaultKeepAlive is KeepAlive's default.
const DefaultKeepAlive = 30 * time.Second

// keepAliveIdle is the keepalive idle time for KeepAlive k (negative:
// leave keepalive as the system has it).
func keepAliveIdle(k time.Duration) time.Duration {
	if k < 0 {
		return -1
	}
	return orDuration(k, DefaultKeepAlive)
}

func (p *Proxy) setKeepAlive(c net.Conn) {
	tc, ok := c.(*net.TCPConn)
	if !ok || p.KeepAlive < 0 {
		return
	}
	idle := keepAliveIdle(p.KeepAlive)
	_ = tc.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: idle, Interval: idle / 3, Count: 3})
}
