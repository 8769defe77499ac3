package frame

import (
	"errors"
	"fmt"
	"testing"
)

// boundaries returns every frame boundary of stream, split by FrameLen one
// frame at a time (the reference a Tracker must agree with), and the
// offset where the first bad length field starts (-1: none).
func boundaries(c Config, stream []byte) (bs map[int]bool, bad int) {
	bs = map[int]bool{0: true}
	for off := 0; off < len(stream); {
		n, err := c.FrameLen(stream[off:])
		if errors.Is(err, ErrShort) {
			return bs, -1
		}
		if err != nil {
			return bs, off
		}
		off += n
		if off <= len(stream) {
			bs[off] = true
		}
	}
	return bs, -1
}

// checkTracker feeds stream to a Tracker in pieces cut at cuts and compares
// every first and last boundary with the reference.
func checkTracker(t *testing.T, c Config, stream []byte, cuts []int) {
	t.Helper()
	want, bad := boundaries(c, stream)
	var tr Tracker
	pos := 0
	for _, end := range append(cuts, len(stream)) {
		if end < pos || end > len(stream) {
			continue
		}
		piece := stream[pos:end]
		first, last, err := tr.Feed(&c, piece)
		if err != nil {
			if bad < 0 || bad < pos-MaxTrackedLengthEnd || bad >= end {
				t.Fatalf("piece [%d,%d): error %v, reference says bad frame at %d", pos, end, err, bad)
			}
			return
		}
		wf, wl := -1, -1
		for i := 0; i <= len(piece); i++ {
			if want[pos+i] && (i > 0 || pos == 0 || want[pos]) {
				if wf < 0 {
					wf = i
				}
				wl = i
			}
		}
		if first != wf || last != wl {
			t.Fatalf("piece [%d,%d): first, last = %d, %d; want %d, %d", pos, end, first, last, wf, wl)
		}
		if tr.AtBoundary() != want[end] {
			t.Fatalf("after byte %d: AtBoundary %v, want %v", end, tr.AtBoundary(), want[end])
		}
		pos = end
	}
	if bad >= 0 && bad+c.LengthFieldOffset+c.LengthFieldLength <= len(stream) {
		t.Fatalf("no error; reference says bad frame at %d", bad)
	}
}

func frameOf(body string) []byte {
	f := []byte{1, 1, 0, 0, byte(len(body) >> 8), byte(len(body))}
	return append(f, body...)
}

func TestTrackerSplits(t *testing.T) {
	var stream []byte
	for _, b := range []string{`{"devid":"a"}`, ``, `{"seq":1}`, `xyz`} {
		stream = append(stream, frameOf(b)...)
	}
	c := DefaultConfig()
	for i := 0; i <= len(stream); i++ {
		for j := i; j <= len(stream); j += 3 {
			checkTracker(t, c, stream, []int{i, j})
		}
	}
}

func TestTrackerBadLength(t *testing.T) {
	c := DefaultConfig()
	stream := append(frameOf(`{}`), 1, 1, 0, 0, 0xff, 0xff) // over MaxFrameLength
	var tr Tracker
	if _, _, err := tr.Feed(&c, stream); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("err = %v, want ErrTooLarge", err)
	}
	if err := Trackable(Config{LengthFieldOffset: 20, LengthFieldLength: 2, HeaderLength: 22}); !errors.Is(err, ErrBadConfig) {
		t.Fatalf("Trackable(offset 20) = %v, want ErrBadConfig", err)
	}
}

func FuzzTracker(f *testing.F) {
	f.Add(append(frameOf(`{"devid":"a"}`), frameOf(`{"seq":1}`)...), uint8(3), uint8(7), false)
	f.Add([]byte{0, 0, 0, 0, 0, 0}, uint8(1), uint8(2), true)
	f.Fuzz(func(t *testing.T, stream []byte, a, b uint8, little bool) {
		c := DefaultConfig()
		c.LittleEndian = little
		checkTracker(t, c, stream, []int{int(a), int(a) + int(b)})
	})
}

// BenchmarkTracker follows 64 KiB reads of 6-byte empty frames (the worst
// case: a boundary every 6 bytes) and of 1 KiB frames.
func BenchmarkTracker(b *testing.B) {
	for _, body := range []int{0, 1018} {
		var buf []byte
		for len(buf) < 64<<10 {
			buf = append(buf, frameOf(string(make([]byte, body)))...)
		}
		buf = buf[:64<<10]
		b.Run(fmt.Sprintf("frame=%dB", body+6), func(b *testing.B) {
			c := DefaultConfig()
			var t Tracker
			b.SetBytes(int64(len(buf)))
			for b.Loop() {
				if _, _, err := t.Feed(&c, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
