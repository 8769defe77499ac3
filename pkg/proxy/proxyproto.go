package proxy

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/pires/go-proxyproto"
)

// Errors of the PROXY protocol step, counted as proxy_untrusted and
// proxy_header.
var (
	ErrProxyUntrusted = errors.New("proxy: PROXY header from an address not in the trusted networks")
	ErrProxyHeader    = errors.New("proxy: missing or malformed PROXY header")
)

var (
	sigV1 = []byte("PROXY ")
	sigV2 = []byte("\r\n\r\n\x00\r\nQUIT\n")
)

const (
	maxV1Header = 107                                   // the spec's bound, CRLF included
	maxV2Header = 16 + 4096                             // fixed part + go-proxyproto's TLV cap
	maxHeader   = max(maxV1Header, maxV2Header) + 4<<10 // buffer bound while reading a header
)

// proxyHeaderLen frames a PROXY header at the start of buf: n > 0 is its
// length, 0 means more bytes are needed, errNoProxyHeader that buf does not
// start with one. Parsing the fields is left to go-proxyproto.
func proxyHeaderLen(buf []byte) (int, error) {
	switch {
	case hasPrefixOrIsPrefix(buf, sigV2):
		if len(buf) < 16 {
			return 0, nil
		}
		n := 16 + int(binary.BigEndian.Uint16(buf[14:16]))
		if n > maxV2Header {
			return 0, fmt.Errorf("%w: v2 header of %d bytes", ErrProxyHeader, n)
		}
		if len(buf) < n {
			return 0, nil
		}
		return n, nil
	case hasPrefixOrIsPrefix(buf, sigV1):
		if i := bytes.Index(buf[:min(len(buf), maxV1Header)], []byte("\r\n")); i >= 0 {
			return i + 2, nil
		}
		if len(buf) >= maxV1Header {
			return 0, fmt.Errorf("%w: v1 header without CRLF in %d bytes", ErrProxyHeader, maxV1Header)
		}
		return 0, nil
	}
	return 0, errNoProxyHeader
}

var errNoProxyHeader = errors.New("no PROXY header")

// unexpectedProxyHeader is the error for a PROXY signature at the start of
// buf from a peer that may not send one (any peer, when no balancer is
// trusted), so the connection is refused at once instead of the header
// being read as frames until the preread deadline. nil if buf does not start
// with a whole signature.
func unexpectedProxyHeader(buf []byte) error {
	if bytes.HasPrefix(buf, sigV2) || bytes.HasPrefix(buf, sigV1) {
		return fmt.Errorf("%w: signature from an untrusted peer", ErrProxyUntrusted)
	}
	return nil
}

// hasPrefixOrIsPrefix: buf starts with sig, or buf is a (possibly empty)
// start of sig and more bytes could complete it.
func hasPrefixOrIsPrefix(buf, sig []byte) bool {
	n := min(len(buf), len(sig))
	return bytes.Equal(buf[:n], sig[:n])
}

// parseProxyHeader parses exactly one complete header with go-proxyproto
// and returns the device's address (nil for a LOCAL header: the balancer's
// own health check).
func parseProxyHeader(h []byte) (net.Addr, error) {
	hdr, err := proxyproto.Read(bufio.NewReaderSize(bytes.NewReader(h), max(len(h), 16)))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrProxyHeader, err)
	}
	if hdr.Command.IsLocal() {
		return nil, nil
	}
	if hdr.SourceAddr == nil {
		return nil, fmt.Errorf("%w: no source address", ErrProxyHeader)
	}
	return hdr.SourceAddr, nil
}

// readProxyHeader handles the PROXY header step of a connection from
// remote: a trusted peer's header is read and removed from buf (which
// keeps the bytes after it) and its source address returned; a header from
// an untrusted peer is refused.
func (p *Proxy) readProxyHeader(c net.Conn, buf []byte) ([]byte, net.Addr, error) {
	remote := c.RemoteAddr()
	trusted := p.trusted(addrIP(remote))
	for {
		if !trusted {
			if err := unexpectedProxyHeader(buf); err != nil {
				return buf, remote, err
			}
		}
		n, err := proxyHeaderLen(buf)
		switch {
		case errors.Is(err, errNoProxyHeader):
			if trusted && !p.ProxyProtocolOptional {
				return buf, remote, fmt.Errorf("%w: a trusted peer sent none", ErrProxyHeader)
			}
			return buf, remote, nil
		case err != nil:
			return buf, remote, err
		case n > 0 && !trusted:
			return buf, remote, ErrProxyUntrusted
		case n > 0:
			src, err := parseProxyHeader(buf[:n])
			if err != nil {
				return buf, remote, err
			}
			if src == nil {
				src = remote
			}
			rest := copy(buf, buf[n:])
			return buf[:rest], src, nil
		}
		if len(buf) == cap(buf) {
			if cap(buf) >= maxHeader {
				return buf, remote, fmt.Errorf("%w: too long", ErrProxyHeader)
			}
			nb := make([]byte, len(buf), min(2*cap(buf)+512, maxHeader))
			copy(nb, buf)
			buf = nb
		}
		m, rerr := c.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+m]
		if rerr != nil && m == 0 {
			return buf, remote, rerr
		}
	}
}

func (p *Proxy) trusted(ip netip.Addr) bool {
	for _, pf := range p.TrustedProxies {
		if pf.Contains(ip) {
			return true
		}
	}
	return false
}

// proxyV2Header is the header sent to a backend: the device's address as
// source, the address it connected to as destination.
func proxyV2Header(src, dst net.Addr) ([]byte, error) {
	return proxyproto.HeaderProxyFromAddrs(2, src, dst).Format()
}
