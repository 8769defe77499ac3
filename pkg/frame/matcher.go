package frame

import (
	"bytes"
	"fmt"
)

// Defaults for the zero fields of a Matcher.
const (
	DefaultMaxFrames = 8
	DefaultMaxBytes  = 16 << 10
	DefaultMaxKeyLen = 128
)

// defaultPath is the JSONField path used when Matcher.Key is nil.
var defaultPath = []string{"devid"}

// Matcher finds the routing key in the first bytes of a connection: it
// walks whole frames from the start of the buffer until one carries the key.
// Options are fields; the zero Matcher routes the original protocol by its
// "devid". A Matcher is safe for concurrent use while its fields are not
// being changed.
type Matcher struct {
	// Frame is the framing. If zero, DefaultConfig() is used.
	Frame Config
	// Key extracts the key from the key frame. If nil, the JSON member
	// "devid" of the body after Frame.HeaderLength is used.
	Key Extractor
	// KeyTypes, if non-empty, lists the message types (the byte at
	// Frame.TypeOffset) of frames that carry the key; frames of other types
	// are skipped. If empty, the first frame is the key frame.
	KeyTypes []byte
	// MaxFrames bounds the frames examined, the key frame included. If zero,
	// a default of 8 is used.
	MaxFrames int
	// MaxBytes bounds the bytes examined: the key frame must end within the
	// first MaxBytes bytes. If zero, a default of 16 KiB is used.
	MaxBytes int
	// MaxKeyLen bounds the key length. If zero, a default of 128 is used.
	MaxKeyLen int
}

func (m *Matcher) frame() Config {
	if m.Frame == (Config{}) {
		return DefaultConfig()
	}
	return m.Frame
}

func (m *Matcher) maxFrames() int { return orDefault(m.MaxFrames, DefaultMaxFrames) }
func (m *Matcher) maxKeyLen() int { return orDefault(m.MaxKeyLen, DefaultMaxKeyLen) }

// PrereadLimit returns MaxBytes or its default: the most bytes Find ever
// needs, so the size of the proxy's preread buffer.
func (m *Matcher) PrereadLimit() int { return orDefault(m.MaxBytes, DefaultMaxBytes) }

func orDefault(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

// Validate reports a setting Find would reject; call it once at startup.
// The error wraps ErrBadConfig.
func (m *Matcher) Validate() error {
	if err := m.frame().Validate(); err != nil {
		return err
	}
	switch {
	case m.MaxFrames < 0:
		return fmt.Errorf("%w: MaxFrames %d is negative", ErrBadConfig, m.MaxFrames)
	case m.MaxBytes < 0 || m.MaxBytes > limitFrameLength:
		return fmt.Errorf("%w: MaxBytes %d out of range 0..%d", ErrBadConfig, m.MaxBytes, limitFrameLength)
	case m.MaxKeyLen < 0:
		return fmt.Errorf("%w: MaxKeyLen %d is negative", ErrBadConfig, m.MaxKeyLen)
	}
	return nil
}

// Find looks for the key in buf, which holds every byte read so far from
// the client, starting at a frame boundary. It returns the key, aliasing
// buf, once the key frame is complete. Call it again with the longer buffer
// each time more bytes arrive; the answer depends only on the bytes, never
// on how they were split into reads.
//
// ErrShort means more bytes are needed. It is returned only while
// len(buf) < PrereadLimit(), so a buffer of PrereadLimit() bytes is always
// enough. Any other error is final: close the connection and count Reason(err).
//
// A frame that cannot end within MaxBytes gives ErrPrereadCap as soon as its
// length field is read, without waiting for its bytes; ErrTooLarge is kept
// for frames over Frame.MaxFrameLength (a protocol violation rather than a
// gateway limit). The key frame's extractor errors are returned as they are
// (later frames are not tried), and a key longer than MaxKeyLen gives
// ErrKeyTooLong.
func (m *Matcher) Find(buf []byte) ([]byte, error) {
	key, _, err := m.FindEnd(buf)
	return key, err
}

// FindEnd is Find that also returns where the key frame ends in buf: the
// device's login is buf[:end], the frames up to and including the key frame.
func (m *Matcher) FindEnd(buf []byte) (key []byte, end int, err error) {
	if err := m.Validate(); err != nil {
		return nil, 0, err
	}
	cfg := m.frame()
	limit := m.PrereadLimit()
	maxFrames := m.maxFrames()
	lenEnd := cfg.LengthFieldOffset + cfg.LengthFieldLength
	off := 0
	for n := 1; ; n++ {
		// Decide by positions, not by len(buf), so a prefix of buf gives
		// either ErrShort or the same answer as buf.
		if off+lenEnd > limit {
			return nil, 0, fmt.Errorf("%w: frame %d header ends past byte %d", ErrPrereadCap, n, limit)
		}
		if len(buf) < off+lenEnd {
			return nil, 0, ErrShort
		}
		fl, err := cfg.frameLen(buf[off:])
		if err != nil {
			return nil, 0, fmt.Errorf("%w (frame %d at byte %d)", err, n, off)
		}
		end := off + fl
		if end > limit {
			return nil, 0, fmt.Errorf("%w: frame %d ends at byte %d, past %d", ErrPrereadCap, n, end, limit)
		}
		if len(buf) < end {
			return nil, 0, ErrShort
		}
		frame := buf[off:end]
		if len(m.KeyTypes) == 0 || bytes.IndexByte(m.KeyTypes, frame[cfg.TypeOffset]) >= 0 {
			key, err := m.extract(frame, cfg)
			return key, end, err
		}
		if n >= maxFrames {
			return nil, 0, fmt.Errorf("%w: gave up after %d frames", ErrTooManyFrames, n)
		}
		off = end
	}
}

// extract runs the extractor and checks its key, whatever extractor it is.
func (m *Matcher) extract(frame []byte, cfg Config) ([]byte, error) {
	var key []byte
	var err error
	if m.Key == nil {
		key, err = extractJSON(frame, cfg.HeaderLength, defaultPath)
	} else {
		key, err = m.Key.Extract(frame)
	}
	if err != nil {
		return nil, err
	}
	if len(key) > m.maxKeyLen() {
		return nil, fmt.Errorf("%w: %d bytes, max %d", ErrKeyTooLong, len(key), m.maxKeyLen())
	}
	return checkKey(key)
}
