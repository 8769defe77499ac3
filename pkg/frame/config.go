package frame

import "fmt"

// Config describes length-field framing with the numbers of Netty's
// LengthFieldBasedFrameDecoder, so an operator can copy them from the Netty
// pipeline. The whole frame, header included, is
//
//	LengthFieldOffset + LengthFieldLength + value + LengthAdjustment
//
// bytes long, where value is the length field read as an unsigned integer.
//
// Fields are taken literally: the zero Config is invalid (its
// LengthFieldLength is 0). Start from DefaultConfig and change what differs.
type Config struct {
	// LengthFieldOffset is where the length field starts. DefaultConfig: 4.
	LengthFieldOffset int
	// LengthFieldLength is the length field's size: 1, 2, 3, 4 or 8.
	// DefaultConfig: 2.
	LengthFieldLength int
	// LengthAdjustment is added to the length field value; negative when the
	// value counts bytes before the field too. DefaultConfig: 0.
	LengthAdjustment int
	// HeaderLength is the number of bytes before the body; it must cover the
	// length field and the type byte. DefaultConfig: 6.
	HeaderLength int
	// LittleEndian reads the length field little-endian. DefaultConfig: false.
	LittleEndian bool
	// MaxFrameLength caps a whole frame, header included (Netty's
	// maxFrameLength). If zero, a default of 4096 is used.
	MaxFrameLength int
	// TypeOffset is where the 1-byte message type sits in the header.
	// DefaultConfig: 0.
	TypeOffset int
}

const (
	defaultMaxFrameLength = 4096
	// limitFrameLength bounds every size in a Config, so frame arithmetic
	// cannot overflow and a typo cannot ask for gigabytes of preread.
	limitFrameLength = 1 << 30
)

// DefaultConfig returns the original protocol's framing (DESIGN.md "The
// wire"): type u8, version u8, time u16, len u16 big-endian (body length,
// header excluded), then the JSON body.
func DefaultConfig() Config {
	return Config{
		LengthFieldOffset: 4,
		LengthFieldLength: 2,
		HeaderLength:      6,
		MaxFrameLength:    defaultMaxFrameLength,
	}
}

func (c Config) maxFrameLength() int {
	if c.MaxFrameLength == 0 {
		return defaultMaxFrameLength
	}
	return c.MaxFrameLength
}

// Validate reports the first setting that cannot describe a frame. The
// error wraps ErrBadConfig.
func (c Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrBadConfig}, args...)...)
	}
	maxLen := c.maxFrameLength()
	switch {
	case c.MaxFrameLength < 0 || c.MaxFrameLength > limitFrameLength:
		return bad("MaxFrameLength %d out of range 1..%d (0 means %d)",
			c.MaxFrameLength, limitFrameLength, defaultMaxFrameLength)
	case c.LengthFieldLength != 1 && c.LengthFieldLength != 2 && c.LengthFieldLength != 3 &&
		c.LengthFieldLength != 4 && c.LengthFieldLength != 8:
		return bad("LengthFieldLength %d: must be 1, 2, 3, 4 or 8 (start from DefaultConfig)",
			c.LengthFieldLength)
	case c.LengthFieldOffset < 0 || c.LengthFieldOffset > maxLen:
		return bad("LengthFieldOffset %d out of range 0..MaxFrameLength (%d)", c.LengthFieldOffset, maxLen)
	case c.HeaderLength < c.LengthFieldOffset+c.LengthFieldLength:
		return bad("HeaderLength %d ends before the length field (offset %d + length %d)",
			c.HeaderLength, c.LengthFieldOffset, c.LengthFieldLength)
	case c.HeaderLength > maxLen:
		return bad("HeaderLength %d over MaxFrameLength %d", c.HeaderLength, maxLen)
	case c.TypeOffset < 0 || c.TypeOffset >= c.HeaderLength:
		return bad("TypeOffset %d outside the %d-byte header", c.TypeOffset, c.HeaderLength)
	case c.LengthAdjustment < -maxLen || c.LengthAdjustment > maxLen:
		return bad("LengthAdjustment %d beyond ±MaxFrameLength (%d)", c.LengthAdjustment, maxLen)
	}
	return nil
}

// FrameLen returns the total length (header + body) of the frame that starts
// buf. It needs only the bytes up to the end of the length field: fewer give
// ErrShort, and the caller compares the result with len(buf) to know whether
// the frame is complete. A length under HeaderLength (or negative after
// LengthAdjustment) gives ErrBadHeader; over MaxFrameLength, ErrTooLarge.
// An invalid Config gives its Validate error.
func (c Config) FrameLen(buf []byte) (int, error) {
	if err := c.Validate(); err != nil {
		return 0, err
	}
	return c.frameLen(buf)
}

// frameLen is FrameLen for a validated Config.
func (c Config) frameLen(buf []byte) (int, error) {
	end := c.LengthFieldOffset + c.LengthFieldLength
	if len(buf) < end {
		return 0, ErrShort
	}
	v := readUint(buf[c.LengthFieldOffset:end], c.LittleEndian)
	maxLen := c.maxFrameLength()
	// Any value over 4 GiB is too large whatever the adjustment (Validate
	// bounds it by 1 GiB); checking first keeps the sum below from overflowing.
	if v > 1<<32 {
		return 0, fmt.Errorf("%w: length field %d, max frame %d", ErrTooLarge, v, maxLen)
	}
	n := int64(end) + int64(v) + int64(c.LengthAdjustment)
	if n < int64(c.HeaderLength) {
		return 0, fmt.Errorf("%w: frame length %d shorter than the %d-byte header",
			ErrBadHeader, n, c.HeaderLength)
	}
	if n > int64(maxLen) {
		return 0, fmt.Errorf("%w: frame length %d over %d", ErrTooLarge, n, maxLen)
	}
	return int(n), nil
}

// readUint reads b (1 to 8 bytes) as an unsigned integer.
func readUint(b []byte, little bool) uint64 {
	var v uint64
	if little {
		for i := len(b) - 1; i >= 0; i-- {
			v = v<<8 | uint64(b[i])
		}
		return v
	}
	for _, x := range b {
		v = v<<8 | uint64(x)
	}
	return v
}
