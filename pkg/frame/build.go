package frame

import (
	"errors"
	"fmt"
)

// ErrUnframeable is a body the framing cannot carry: its frame's length does
// not fit the length field, or is over MaxFrameLength.
var ErrUnframeable = errors.New("frame: body cannot be framed")

// Build returns a frame of c carrying body: a header of zeros but for the
// type byte and the length field (Netty's rule inverted), then body.
func (c Config) Build(typ byte, body []byte) ([]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if c.TypeOffset >= c.HeaderLength {
		return nil, fmt.Errorf("%w: type offset %d outside the %d-byte header", ErrUnframeable, c.TypeOffset, c.HeaderLength)
	}
	f := make([]byte, c.HeaderLength, c.HeaderLength+len(body))
	f[c.TypeOffset] = typ
	f = append(f, body...)
	if err := c.PutLength(f); err != nil {
		return nil, err
	}
	if n, err := c.FrameLen(f); err != nil || n != len(f) {
		return nil, fmt.Errorf("%w: the framing reads %d bytes of %d (%v)", ErrUnframeable, n, len(f), err)
	}
	return f, nil
}

// PutLength writes the length of the whole frame f into its length field,
// inverting Netty's rule len(f) = offset + fieldLength + value + adjustment.
func (c Config) PutLength(f []byte) error {
	end := c.LengthFieldOffset + c.LengthFieldLength
	v := int64(len(f)) - int64(end) - int64(c.LengthAdjustment)
	bits := 8 * c.LengthFieldLength
	if v < 0 || (bits < 64 && v >= 1<<bits) || len(f) < end {
		return fmt.Errorf("%w: a %d-byte frame does not fit the length field", ErrUnframeable, len(f))
	}
	field := f[c.LengthFieldOffset:end]
	for i := range field {
		shift := 8 * i // little-endian: least significant byte first
		if !c.LittleEndian {
			shift = 8 * (len(field) - 1 - i)
		}
		field[i] = byte(v >> shift)
	}
	return nil
}
