// Package testkit holds helpers the tests of several packages share:
// frames of the default protocol (DESIGN.md: a 6-byte header, type,
// version, a 16-bit tag and a 16-bit body length) and bounded polling.
package testkit

import (
	"encoding/binary"
	"io"
	"testing"
	"time"
)

// Frame builds a frame of the default 6-byte header format (version 1,
// tag 0).
func Frame(typ byte, body string) []byte {
	b := make([]byte, 6, 6+len(body))
	b[0], b[1] = typ, 1
	binary.BigEndian.PutUint16(b[4:], uint16(len(body)))
	return append(b, body...)
}

// ReadFrame reads one frame of the default format.
func ReadFrame(r io.Reader) (typ byte, body []byte, err error) {
	var h [6]byte
	if _, err = io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	body = make([]byte, binary.BigEndian.Uint16(h[4:]))
	_, err = io.ReadFull(r, body)
	return h[0], body, err
}

// WaitFor polls cond every poll until it holds, and fails t with what
// when it does not within d.
func WaitFor(t testing.TB, d, poll time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(poll)
	}
}
