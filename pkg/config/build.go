package config

import (
	"errors"
	"fmt"
	"io"

	"github.com/devgate/devgate/pkg/frame"
	"github.com/devgate/devgate/pkg/ring"
)

var errEOF = io.EOF

func ioLimit(r io.Reader) io.Reader { return io.LimitReader(r, MaxFileSize+1) }

// FrameConfig returns the framing with defaults filled in.
func (f Frame) FrameConfig() (frame.Config, error) { return f.frameConfig("frame") }

// frameConfig is FrameConfig for the section at path.
func (f Frame) frameConfig(path string) (frame.Config, error) {
	c := frame.DefaultConfig()
	set := func(dst *int, v *int) {
		if v != nil {
			*dst = *v
		}
	}
	set(&c.LengthFieldOffset, f.LengthFieldOffset)
	set(&c.LengthFieldLength, f.LengthFieldLength)
	set(&c.LengthAdjustment, f.LengthAdjustment)
	set(&c.HeaderLength, f.HeaderLength)
	set(&c.MaxFrameLength, f.MaxFrameLength)
	set(&c.TypeOffset, f.TypeOffset)
	switch f.ByteOrder {
	case "", "big":
	case "little":
		c.LittleEndian = true
	default:
		return c, fmt.Errorf("%s.byteOrder %q: want big or little", path, f.ByteOrder)
	}
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Matcher builds the key matcher the proxy uses.
func (c *Config) Matcher() (*frame.Matcher, error) {
	fc, err := c.Frame.FrameConfig()
	if err != nil {
		return nil, err
	}
	k := c.Key
	var ext frame.Extractor
	switch {
	case k.JSON != "" && k.Bytes != nil:
		return nil, errors.New("key: set json or bytes, not both")
	case k.Bytes != nil:
		ext, err = frame.NewByteRange(k.Bytes.Offset, k.Bytes.Length)
	default:
		path := k.JSON
		if path == "" {
			path = "devid"
		}
		ext, err = frame.NewJSONField(path, fc.HeaderLength)
	}
	if err != nil {
		return nil, fmt.Errorf("key: %w", err)
	}
	if k.MaxFrames < 0 || k.MaxBytes < 0 || k.MaxLength < 0 {
		return nil, errors.New("key: maxFrames, maxBytes and maxLength must not be negative")
	}
	types := make([]byte, 0, len(k.Types))
	for _, t := range k.Types {
		if t < 0 || t > 255 {
			return nil, fmt.Errorf("key.types: %d is not a byte", t)
		}
		types = append(types, byte(t))
	}
	m := &frame.Matcher{Frame: fc, Key: ext, KeyTypes: types,
		MaxFrames: k.MaxFrames, MaxBytes: k.MaxBytes, MaxKeyLen: k.MaxLength}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("key: %w", err)
	}
	return m, nil
}

// RingMode is the configured mode or the default.
func (c *Config) RingMode() (ring.Mode, error) {
	switch m := ring.Mode(c.Ring.Mode); m {
	case "":
		return ring.ModeConsistent, nil
	case ring.ModeConsistent, ring.ModeCRC32Mod:
		return m, nil
	default:
		return "", fmt.Errorf("ring.mode %q: want %s or %s", c.Ring.Mode, ring.ModeConsistent, ring.ModeCRC32Mod)
	}
}

// BuildRing builds the ring of the static backend list.
func (c *Config) BuildRing() (ring.Ring, error) {
	mode, err := c.RingMode()
	if err != nil {
		return nil, err
	}
	bs := make([]ring.Backend, 0, len(c.Backends))
	for i, b := range c.Backends {
		addr, addrs, err := b.addrs(i)
		if err != nil {
			return nil, err
		}
		bs = append(bs, ring.Backend{ID: b.ID, Addr: addr, Addrs: addrs, Weight: b.Weight, Zone: b.Zone, Meta: b.Meta})
	}
	r, err := ring.New(mode, bs)
	if err != nil {
		return nil, fmt.Errorf("backends: %w", err)
	}
	return r, nil
}
