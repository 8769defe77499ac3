package proxy

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/devgate/devgate/pkg/frame"
)

// startConn registers a new client so Shutdown can wait for and cut it
// (c nil: an event loop tracks it).
func (p *Proxy) startConn(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return false
	}
	p.wg.Add(1)
	p.stats.active.Add(1)
	if c != nil {
		p.prereads[c] = struct{}{}
	}
	return true
}

// refuseOverCap refuses a connection just accepted when the connection cap
// is reached: closes it (closeSock) and counts it.
func (p *Proxy) refuseOverCap(closeSock func()) bool {
	if lim := p.connCap; lim >= 0 && p.stats.active.Load() >= lim {
		closeSock()
		p.count(ReasonMaxConns)
		return true
	}
	return false
}

// admitToLoop is the admission of a client a loop takes from accept: the
// steps a loop does not do (PROXY header, TLS) are off, so the per-address
// limits apply at once. It returns the release of the per-address slot, or
// false when the client was refused (closed by closeSock and counted).
func (p *Proxy) admitToLoop(ip netip.Addr, client fmt.Stringer, closeSock func()) (release func(), ok bool) {
	if !p.startConn(nil) {
		closeSock()
		p.count(ReasonShutdown)
		return nil, false
	}
	release, err := p.acquireIP(ip)
	if err != nil {
		closeSock()
		p.end(ending{err: err, client: client})
		return nil, false
	}
	return release, true
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
type limitError Reason

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

// prereadPool holds the small first buffers; most login frames fit, and a
// buffer only grows (up to the matcher's cap) for the rare larger one.
var prereadPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

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

// prereadReason is the reason a connection is refused for err in the
// steps before routing, n bytes read.
func prereadReason(err error, n int) Reason {
	var ne net.Error
	var le limitError
	var te *tlsError
	switch {
	case errors.As(err, &le):
		return Reason(le)
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
		return Reason(r)
	}
	return ReasonReadError
}
