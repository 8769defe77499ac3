package proxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/devgate/devgate/pkg/ring"
)

// A backend that accepts and then resets or closes before its first byte
// (a dying server, its listen queue still open) has not taken the device:
// the proxy still holds the preread bytes and nothing reached the device,
// so it counts as a failed dial and the next owner gets the same bytes,
// within MaxTries. The loops watch for it until the first byte moves
// either way (evfirst_linux.go). The goroutine path waits up to
// firstByteWait for the backend's first bytes before the copy starts;
// bytes from the device meanwhile wait in its socket.

// firstByteWait bounds the goroutine path's wait for a backend's first
// bytes (never longer than the dial timeout).
const firstByteWait = time.Second

// sendPreread is what the goroutine path sends a backend it reached.
type sendPreread struct {
	client     net.Conn
	buf        []byte // every byte read from the client
	src, local net.Addr
}

// errClientWrite: the backend's first bytes could not go to the client.
var errClientWrite = errors.New("proxy: write to client failed")

// send writes s.buf to bc (after a PROXY header when b wants one), then
// passes the backend's first bytes, if they come within firstByteWait, to
// the client. It returns how many it passed. A reset or EOF before them is
// an error isBackendGone knows.
func (p *Proxy) send(s sendPreread, b ring.Backend, bc net.Conn) (int64, error) {
	out := s.buf
	if p.SendProxyV2 || b.Meta["proxy"] == "v2" {
		hdr, err := proxyV2Header(s.src, s.local)
		if err != nil {
			return 0, fmt.Errorf("proxy header: %w", err)
		}
		out = append(hdr, s.buf...)
	}
	if _, err := bc.Write(out); err != nil {
		return 0, err
	}
	if bc.SetReadDeadline(time.Now().Add(min(firstByteWait, p.dialTimeout()))) != nil {
		return 0, nil // cannot wait: the copy takes it from here
	}
	bp := idleBufPool.Get().(*[]byte)
	defer idleBufPool.Put(bp)
	n, err := bc.Read(*bp)
	if derr := bc.SetReadDeadline(time.Time{}); derr != nil && err == nil {
		err = derr
	}
	if n > 0 {
		if _, werr := s.client.Write((*bp)[:n]); werr != nil {
			return int64(n), fmt.Errorf("%w: %w", errClientWrite, werr)
		}
		return int64(n), nil
	}
	if isBackendGone(err) {
		return 0, err
	}
	return 0, nil // quiet so far (or an error the copy will see)
}

// isBackendGone: the backend reset or closed its side.
func isBackendGone(err error) bool {
	return errors.Is(err, io.EOF) || isReset(err)
}

// sendFailReason is the close reason for an error of send, or "" when the
// next owner should be tried (the backend went away before its first byte).
func sendFailReason(err error) string {
	switch {
	case errors.Is(err, errClientWrite):
		return ReasonClientGone
	case isBackendGone(err):
		return ""
	}
	return ReasonBackendWrite
}
