package frame

import (
	"errors"
	"testing"
)

func TestBuildRoundTrip(t *testing.T) {
	little := DefaultConfig()
	little.LittleEndian, little.LengthFieldLength, little.HeaderLength, little.LengthAdjustment = true, 4, 8, 2
	for _, c := range []Config{DefaultConfig(), little} {
		f, err := c.Build(9, []byte(`{"after":5}`))
		if err != nil {
			t.Fatal(err)
		}
		if n, err := c.FrameLen(f); err != nil || n != len(f) || f[c.TypeOffset] != 9 {
			t.Fatalf("%+v: %x reads as %d bytes (%v)", c, f, n, err)
		}
	}
	small := DefaultConfig()
	small.MaxFrameLength = 10
	if _, err := small.Build(1, make([]byte, 20)); !errors.Is(err, ErrUnframeable) {
		t.Fatalf("over maxFrameLength: %v", err)
	}
	short := DefaultConfig()
	short.LengthFieldLength = 1
	if _, err := short.Build(1, make([]byte, 300)); !errors.Is(err, ErrUnframeable) {
		t.Fatalf("over the length field: %v", err)
	}
}
