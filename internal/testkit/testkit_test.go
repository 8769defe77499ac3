package testkit

import (
	"bytes"
	"testing"
	"time"
)

func TestFrameRoundTrip(t *testing.T) {
	f := Frame(2, `{"hb":1}`)
	if want := []byte{2, 1, 0, 0, 0, 8}; !bytes.Equal(f[:6], want) {
		t.Fatalf("header % x, want % x", f[:6], want)
	}
	typ, body, err := ReadFrame(bytes.NewReader(f))
	if err != nil || typ != 2 || string(body) != `{"hb":1}` {
		t.Fatalf("ReadFrame = %d %q %v", typ, body, err)
	}
}

func TestWaitFor(t *testing.T) {
	n := 0
	WaitFor(t, 5*time.Second, time.Millisecond, "three polls", func() bool { n++; return n == 3 })
}
