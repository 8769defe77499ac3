package demo

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/devgate/devgate/pkg/frame"
)

// readBufSize is the per-connection read buffer: a login frame fits, and
// thousands of idle connections stay cheap. Longer frames are copied out.
const readBufSize = 1024

// handle answers c's frames until c fails, sends a bad frame, idles out or
// the Backend closes.
func (b *Backend) handle(c net.Conn) {
	defer b.wg.Done()
	defer func() {
		b.mu.Lock()
		delete(b.conns, c)
		b.mu.Unlock()
		c.Close()
	}()

	fr := frameReader{
		r:   bufio.NewReaderSize(c, max(readBufSize, b.cfg.HeaderLength)),
		cfg: b.cfg,
	}
	idle := b.idleTimeout()
	var (
		out   []byte
		devid []byte // the device id this connection logged in with, nil before a login
	)
	for {
		if idle > 0 {
			c.SetDeadline(time.Now().Add(idle))
		}
		f, err := fr.next()
		if err == nil {
			out, devid, err = b.reply(out[:0], devid, f)
		}
		if err == nil {
			b.frames.Add(1) // before the write, so a client that has its reply sees it counted
			_, err = c.Write(out)
		}
		if err != nil {
			b.closeReason(c, err)
			return
		}
	}
}

// closeReason counts and logs why c is being closed.
func (b *Backend) closeReason(c net.Conn, err error) {
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
		return // the client left, or Close closed c
	case errors.Is(err, os.ErrDeadlineExceeded):
		b.log.Debug("connection idle, closed", zap.Stringer("remote", c.RemoteAddr()))
		return
	case errors.Is(err, frame.ErrTooLarge), errors.Is(err, frame.ErrBadHeader),
		errors.Is(err, errUnframeable):
		b.badFrames.Add(1)
		b.log.Debug("bad frame, closing", zap.Stringer("remote", c.RemoteAddr()),
			zap.String("reason", frame.Reason(err)), zap.Error(err))
		return
	}
	b.log.Debug("connection failed", zap.Stringer("remote", c.RemoteAddr()), zap.Error(err))
}

// frameReader reads whole frames. A frame that fits the bufio buffer is
// returned in place (no copy); a longer one is copied into big.
type frameReader struct {
	r       *bufio.Reader
	cfg     frame.Config
	big     []byte
	pending int // bytes of the last frame still in r, dropped by the next call
}

// next returns the next frame; it is valid until the following call.
func (fr *frameReader) next() ([]byte, error) {
	if fr.pending > 0 {
		fr.r.Discard(fr.pending) // already buffered: cannot fail
		fr.pending = 0
	}
	hdr, err := fr.r.Peek(fr.cfg.HeaderLength)
	if err != nil {
		if errors.Is(err, io.EOF) && len(hdr) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	// The header covers the length field (Validate checks), so ErrShort
	// cannot happen here.
	n, err := fr.cfg.FrameLen(hdr)
	if err != nil {
		return nil, err
	}
	if n <= fr.r.Size() {
		f, err := fr.r.Peek(n)
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		fr.pending = n
		return f, nil
	}
	if cap(fr.big) < n {
		fr.big = make([]byte, n)
	}
	f := fr.big[:n]
	if _, err := io.ReadFull(fr.r, f); err != nil {
		return nil, err
	}
	return f, nil
}

// errUnframeable is a reply whose length the length field cannot hold.
var errUnframeable = errors.New("reply does not fit the length field")

// reply appends the answer to frame f to out: f's header with the length
// rewritten, then {"backend":…,"devid":…} if f carries a key (a login, whose
// key becomes the connection's devid), {"backend":…,"devid":…,"seq":N} if
// it has an integer "seq" member, else f's body. devid is the connection's
// device id so far; the returned one replaces it.
func (b *Backend) reply(out, devid, f []byte) ([]byte, []byte, error) {
	hl := b.cfg.HeaderLength
	out = append(out, f[:hl]...)
	if key, err := b.key.Extract(f); err == nil {
		b.logins.Add(1)
		devid = append(devid[:0], key...) // reuses the slice: a login a connection repeats costs nothing
		out = append(out, b.prefix...)
		out = appendJSONString(out, key)
		out = append(out, '"', '}')
	} else if seq, ok := b.seqOf(f); ok {
		b.seqs.Add(1)
		out = append(out, b.prefix...)
		out = appendJSONString(out, devid)
		out = append(out, `","seq":`...)
		out = strconv.AppendInt(out, seq, 10)
		out = append(out, '}')
	} else {
		out = append(out, f[hl:]...)
	}
	return out, devid, putLength(out, b.cfg)
}

// seqOf returns the integer in f's JSON member "seq" (a number, or a string
// of digits, read as the device id is read), if any.
func (b *Backend) seqOf(f []byte) (int64, bool) {
	v, err := b.seq.Extract(f)
	if err != nil {
		return 0, false
	}
	n, err := strconv.ParseInt(string(v), 10, 64) // a short string: no allocation
	return n, err == nil
}

// putLength writes f's length into its length field (frame.Config.PutLength).
func putLength(f []byte, c frame.Config) error {
	if err := c.PutLength(f); err != nil {
		return fmt.Errorf("%w: %w", errUnframeable, err)
	}
	return nil
}

// appendJSONString appends s escaped as the inside of a JSON string. Keys
// from pkg/frame's extractors are printable ASCII, but a custom Extractor's
// may hold quotes or control bytes.
func appendJSONString(dst, s []byte) []byte {
	const hex = "0123456789abcdef"
	for _, ch := range s {
		switch {
		case ch == '"' || ch == '\\':
			dst = append(dst, '\\', ch)
		case ch < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hex[ch>>4], hex[ch&0xf])
		default:
			dst = append(dst, ch)
		}
	}
	return dst
}
