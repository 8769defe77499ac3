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
// within MaxTries, if it happens within maxFirstByteWait of the preread
// bytes going out. The loops watch for it until the first byte moves
// either way (loop_copy_linux.go). The goroutine path waits up to
// firstByteWait for the backend's first bytes before the copy starts;
// bytes from the device meanwhile wait in its socket.

// maxFirstByteWait bounds the time after the preread bytes went to a backend
// in which its going away counts as a failed dial (never longer than the
// dial timeout).
const maxFirstByteWait = time.Second

func (p *Proxy) firstByteWait() time.Duration { return min(maxFirstByteWait, p.dialTimeout()) }

// sendPreread is what the goroutine path sends a backend it reached.
type sendPreread struct {
	buf        []byte // every byte read from the client
	src, local net.Addr
}

// send writes s.buf to bc (after a PROXY header when b wants one) and
// returns the backend's first bytes if they come within firstByteWait. A
// reset or EOF before them is an error isBackendGone knows.
func (p *Proxy) send(s sendPreread, b ring.Backend, bc net.Conn) ([]byte, error) {
	out := s.buf
	if p.SendProxyV2 || b.Meta["proxy"] == "v2" {
		hdr, err := proxyV2Header(s.src, s.local)
		if err != nil {
			return nil, fmt.Errorf("proxy header: %w", err)
		}
		out = append(hdr, s.buf...)
	}
	if _, err := bc.Write(out); err != nil {
		return nil, err
	}
	if bc.SetReadDeadline(time.Now().Add(p.firstByteWait())) != nil {
		return nil, nil // cannot wait: the copy takes it from here
	}
	bp := idleBufPool.Get().(*[]byte)
	defer idleBufPool.Put(bp)
	n, err := bc.Read(*bp)
	if derr := bc.SetReadDeadline(time.Time{}); derr != nil && err == nil {
		err = derr
	}
	if n > 0 {
		return append([]byte(nil), (*bp)[:n]...), nil
	}
	if isBackendGone(err) {
		return nil, err
	}
	return nil, nil // quiet so far (or an error the copy will see)
}

// isBackendGone: the backend reset or closed its side.
func isBackendGone(err error) bool {
	return errors.Is(err, io.EOF) || isReset(err)
}

// sendFailReason is the close reason for an error of send, or "" when the
// next owner should be tried (the backend went away before its first byte).
func sendFailReason(err error) Reason {
	if isBackendGone(err) {
		return ""
	}
	return ReasonBackendWrite
}
