package frame

import (
	"errors"
	"strings"
	"testing"
)

func TestFrameLen(t *testing.T) {
	def := DefaultConfig()
	le4 := Config{LengthFieldLength: 4, HeaderLength: 5, TypeOffset: 4, LittleEndian: true}
	// Netty's "length includes the whole frame": value counts the header too.
	whole := Config{LengthFieldOffset: 1, LengthFieldLength: 3, LengthAdjustment: -4, HeaderLength: 4}
	tests := []struct {
		name string
		cfg  Config
		buf  []byte
		want int
		err  error
	}{
		{"default", def, []byte{1, 1, 0, 0, 0, 10}, 16, nil},
		{"default ignores body bytes", def, []byte{1, 1, 0, 0, 0, 0, 'x'}, 6, nil},
		{"default empty", def, nil, 0, ErrShort},
		{"default short", def, []byte{1, 1, 0, 0, 0}, 0, ErrShort},
		{"default max", def, []byte{1, 1, 0, 0, 0x0f, 0xfa}, 4096, nil},
		{"default too large", def, []byte{1, 1, 0, 0, 0x0f, 0xfb}, 0, ErrTooLarge},
		{"len 1", Config{LengthFieldLength: 1, HeaderLength: 1}, []byte{200}, 201, nil},
		{"len 2 little", Config{LengthFieldLength: 2, HeaderLength: 2, LittleEndian: true}, []byte{0x01, 0x02}, 0x0203, nil},
		{"len 3 big", Config{LengthFieldLength: 3, HeaderLength: 3}, []byte{0, 1, 2}, 0x0105, nil},
		{"len 3 little", Config{LengthFieldLength: 3, HeaderLength: 3, LittleEndian: true}, []byte{2, 1, 0}, 0x0105, nil},
		{"len 4 little", le4, []byte{7, 0, 0, 0, 1}, 11, nil},
		{"len 4 little short", le4, []byte{7, 0, 0}, 0, ErrShort},
		{"len 4 big huge", Config{LengthFieldLength: 4, HeaderLength: 4}, []byte{0xff, 0xff, 0xff, 0xff}, 0, ErrTooLarge},
		{"len 8", Config{LengthFieldLength: 8, HeaderLength: 8}, []byte{0, 0, 0, 0, 0, 0, 0, 9}, 17, nil},
		{"len 8 little", Config{LengthFieldLength: 8, HeaderLength: 8, LittleEndian: true}, []byte{9, 0, 0, 0, 0, 0, 0, 0}, 17, nil},
		{"len 8 top bit", Config{LengthFieldLength: 8, HeaderLength: 8}, []byte{0x80, 0, 0, 0, 0, 0, 0, 0}, 0, ErrTooLarge},
		{"len 8 all ones", Config{LengthFieldLength: 8, HeaderLength: 8}, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 0, ErrTooLarge},
		{"whole frame", whole, []byte{1, 0, 0, 10}, 10, nil},
		{"whole frame header only", whole, []byte{1, 0, 0, 4}, 4, nil},
		{"whole frame under header", whole, []byte{1, 0, 0, 3}, 0, ErrBadHeader},
		{"whole frame zero", whole, []byte{1, 0, 0, 0}, 0, ErrBadHeader},
		{"positive adjustment", Config{LengthFieldLength: 1, LengthAdjustment: 2, HeaderLength: 3}, []byte{5}, 8, nil},
		{"max frame length", Config{LengthFieldLength: 1, HeaderLength: 1, MaxFrameLength: 10}, []byte{10}, 0, ErrTooLarge},
		{"max frame length edge", Config{LengthFieldLength: 1, HeaderLength: 1, MaxFrameLength: 11}, []byte{10}, 11, nil},
		{"zero config", Config{}, []byte{1, 2, 3, 4, 5, 6}, 0, ErrBadConfig},
		{"bad field length", Config{LengthFieldLength: 5, HeaderLength: 5}, []byte{1, 2, 3, 4, 5, 6}, 0, ErrBadConfig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.cfg.FrameLen(tt.buf)
			if !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) {
				t.Fatalf("FrameLen(% x) error = %v, want %v", tt.buf, err, tt.err)
			}
			if got != tt.want {
				t.Fatalf("FrameLen(% x) = %d, want %d", tt.buf, got, tt.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	mod := func(f func(*Config)) Config {
		c := DefaultConfig()
		f(&c)
		return c
	}
	tests := []struct {
		name string
		cfg  Config
		want string // substring of the error; "" means valid
	}{
		{"default", DefaultConfig(), ""},
		{"zero max frame means default", mod(func(c *Config) { c.MaxFrameLength = 0 }), ""},
		{"zero", Config{}, "LengthFieldLength 0"},
		{"field length 5", mod(func(c *Config) { c.LengthFieldLength = 5 }), "LengthFieldLength 5"},
		{"field length 16", mod(func(c *Config) { c.LengthFieldLength = 16 }), "LengthFieldLength 16"},
		{"negative offset", mod(func(c *Config) { c.LengthFieldOffset = -1 }), "LengthFieldOffset -1"},
		{"header before length field", mod(func(c *Config) { c.HeaderLength = 5 }), "HeaderLength 5 ends before"},
		{"zero header", mod(func(c *Config) { c.HeaderLength = 0 }), "HeaderLength 0 ends before"},
		{"header over max", mod(func(c *Config) { c.MaxFrameLength = 5; c.HeaderLength = 6 }), "HeaderLength 6 over"},
		{"offset over max", mod(func(c *Config) { c.MaxFrameLength = 3 }), "LengthFieldOffset 4 out of range"},
		{"type outside header", mod(func(c *Config) { c.TypeOffset = 6 }), "TypeOffset 6"},
		{"negative type offset", mod(func(c *Config) { c.TypeOffset = -1 }), "TypeOffset -1"},
		{"negative max", mod(func(c *Config) { c.MaxFrameLength = -1 }), "MaxFrameLength -1"},
		{"huge max", mod(func(c *Config) { c.MaxFrameLength = 1<<30 + 1 }), "MaxFrameLength"},
		{"adjustment", mod(func(c *Config) { c.LengthAdjustment = -4097 }), "LengthAdjustment -4097"},
		{"negative adjustment ok", mod(func(c *Config) { c.LengthAdjustment = -6 }), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrBadConfig) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate() = %v, want ErrBadConfig with %q", err, tt.want)
			}
		})
	}
}

func TestReason(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{nil, "ok"},
		{ErrShort, "short"},
		{ErrBadHeader, "bad_header"},
		{ErrTooLarge, "too_large"},
		{ErrNoKey, "no_key"},
		{ErrKeyTooLong, "key_too_long"},
		{ErrNotJSON, "not_json"},
		{ErrTooManyFrames, "too_many_frames"},
		{ErrPrereadCap, "preread_cap"},
		{ErrBadKey, "bad_key"},
		{ErrBadConfig, "bad_config"},
		{errors.New("boom"), "other"},
		{wrap(ErrTooLarge), "too_large"},
	}
	for _, tt := range tests {
		if got := Reason(tt.err); got != tt.want {
			t.Errorf("Reason(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}

func wrap(err error) error { return &wrapped{err} }

type wrapped struct{ err error }

func (w *wrapped) Error() string { return "wrapped: " + w.err.Error() }
func (w *wrapped) Unwrap() error { return w.err }
