package frame

import "fmt"

// MaxTrackedLengthEnd bounds where a Tracker's length field may end
// (LengthFieldOffset + LengthFieldLength): the bytes up to it are kept
// across reads.
const MaxTrackedLengthEnd = 16

// Tracker follows the frame boundaries of a byte stream fed to it in
// pieces of any size, without holding the stream: the gateway uses it to
// cut a live connection between two frames. The zero Tracker is at the
// start of a stream; it is 24 bytes and allocates nothing.
type Tracker struct {
	left uint32 // bytes of the current frame still to come, once its length is known
	hdrN uint8  // bytes of the next frame's header seen, up to the length field's end
	hdr  [MaxTrackedLengthEnd]byte
}

// Trackable reports whether c can be tracked (a validated c whose length
// field ends within MaxTrackedLengthEnd bytes).
func Trackable(c Config) error {
	if err := c.Validate(); err != nil {
		return err
	}
	if end := c.LengthFieldOffset + c.LengthFieldLength; end > MaxTrackedLengthEnd {
		return fmt.Errorf("%w: length field ends at byte %d, past the %d a tracker keeps",
			ErrBadConfig, end, MaxTrackedLengthEnd)
	}
	return nil
}

// AtBoundary reports whether the bytes fed so far end with a whole frame.
func (t *Tracker) AtBoundary() bool { return t.left == 0 && t.hdrN == 0 }

// Reset puts t at the start of a new stream.
func (t *Tracker) Reset() { *t = Tracker{} }

// Feed consumes b, the next bytes of the stream, framed by c (which must
// pass Trackable). It returns the offsets in b of the first and of the last
// frame boundary (0 counts when the stream was at a boundary before b;
// len(b) when b ends a frame), or -1 and -1 when b holds none. A length
// field that c refuses gives its error: the stream cannot be followed any
// further, and t must not be fed again.
func (t *Tracker) Feed(c *Config, b []byte) (first, last int, err error) {
	first, last = -1, -1
	if t.AtBoundary() {
		first, last = 0, 0
	}
	end := c.LengthFieldOffset + c.LengthFieldLength
	for i := 0; i < len(b); {
		if t.left > 0 {
			k := min(int(t.left), len(b)-i)
			i += k
			t.left -= uint32(k)
			if t.left == 0 {
				if first < 0 {
					first = i
				}
				last = i
			}
			continue
		}
		if t.hdrN == 0 && len(b)-i >= end { // the common case: the length field is in b
			n, err := c.frameLen(b[i:])
			if err != nil {
				return first, last, err
			}
			if n > len(b)-i {
				t.left = uint32(n - (len(b) - i))
				break
			}
			i += n
			if first < 0 {
				first = i
			}
			last = i
			continue
		}
		k := copy(t.hdr[t.hdrN:end], b[i:])
		i += k
		t.hdrN += uint8(k)
		if int(t.hdrN) < end {
			break
		}
		n, err := c.frameLen(t.hdr[:end])
		if err != nil {
			return first, last, err
		}
		t.hdrN, t.left = 0, uint32(n-end)
		if t.left == 0 {
			if first < 0 {
				first = i
			}
			last = i
		}
	}
	return first, last, nil
}
