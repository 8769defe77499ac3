package sim

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Message types of the original protocol.
const (
	TypeLogin     byte = 1 // carries the device id in its JSON body
	TypeHeartbeat byte = 2 // echoed by the server
)

// HeaderLen is the size of the fixed frame header.
const HeaderLen = 6

// MaxBody is the largest body the u16 length field can describe.
const MaxBody = 0xFFFF

// ErrBodyTooLarge is returned by TryAppendFrame for a body over MaxBody.
var ErrBodyTooLarge = errors.New("sim: frame body over 65535 bytes")

// AppendFrame appends one frame (6-byte big-endian header, then body) to dst
// and returns the extended slice. A body over MaxBody cannot be framed: dst is
// returned unchanged, so callers that build bodies from input should use
// TryAppendFrame.
func AppendFrame(dst []byte, typ, version byte, t uint16, body []byte) []byte {
	if len(body) > MaxBody {
		return dst
	}
	dst = append(dst, typ, version)
	dst = binary.BigEndian.AppendUint16(dst, t)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(body)))
	return append(dst, body...)
}

// TryAppendFrame is AppendFrame that reports an oversized body as
// ErrBodyTooLarge instead of appending nothing.
func TryAppendFrame(dst []byte, typ, version byte, t uint16, body []byte) ([]byte, error) {
	if len(body) > MaxBody {
		return dst, fmt.Errorf("%w: %d", ErrBodyTooLarge, len(body))
	}
	return AppendFrame(dst, typ, version, t, body), nil
}

// readFrame reads one frame from r into buf (grown as needed) and returns its
// type and body; body aliases buf. The u16 length bounds a frame to 64 KiB.
func readFrame(r io.Reader, buf []byte) (typ byte, body, newBuf []byte, err error) {
	if cap(buf) < HeaderLen {
		buf = make([]byte, HeaderLen, 512)
	}
	hdr := buf[:HeaderLen]
	if _, err := io.ReadFull(r, hdr); err != nil {
		return 0, nil, buf, err
	}
	n := int(binary.BigEndian.Uint16(hdr[4:6]))
	if cap(buf) < HeaderLen+n {
		nb := make([]byte, HeaderLen+n)
		copy(nb, hdr)
		buf = nb
	}
	buf = buf[:HeaderLen+n]
	if _, err := io.ReadFull(r, buf[HeaderLen:]); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, buf, err
	}
	return buf[0], buf[HeaderLen:], buf, nil
}
