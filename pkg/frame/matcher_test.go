package frame

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
)

// mk builds one frame of the default protocol.
func mk(typ byte, body string) []byte {
	b := []byte{typ, 1, 0x12, 0x34, 0, 0}
	binary.BigEndian.PutUint16(b[4:], uint16(len(body)))
	return append(b, body...)
}

func cat(frames ...[]byte) []byte { return bytes.Join(frames, nil) }

const loginBody = `{"devid":"A1B2C3D4","token":"tok","os":"android"}`

func TestMatcherFind(t *testing.T) {
	hb := mk(9, `{}`)
	login := mk(1, loginBody)
	br, _ := NewByteRange(6, 4)
	tests := []struct {
		name string
		m    Matcher
		buf  []byte
		want string
		err  error
	}{
		{"first frame", Matcher{}, login, "A1B2C3D4", nil},
		{"first frame with trailing bytes", Matcher{}, cat(login, hb, []byte{1, 2}), "A1B2C3D4", nil},
		{"first frame only without KeyTypes", Matcher{}, cat(hb, login), "", ErrNoKey},
		{"third frame", Matcher{KeyTypes: []byte{1}}, cat(hb, hb, login), "A1B2C3D4", nil},
		{"third frame of several types", Matcher{KeyTypes: []byte{3, 1}}, cat(mk(2, "x"), hb, login), "A1B2C3D4", nil},
		{"key frame without key", Matcher{KeyTypes: []byte{1}}, cat(hb, mk(1, `{}`), login), "", ErrNoKey},
		{"too many frames", Matcher{KeyTypes: []byte{1}, MaxFrames: 2}, cat(hb, hb, login), "", ErrTooManyFrames},
		{"max frames includes key frame", Matcher{KeyTypes: []byte{1}, MaxFrames: 3}, cat(hb, hb, login), "A1B2C3D4", nil},
		{"default max frames", Matcher{KeyTypes: []byte{1}}, bytes.Repeat(hb, 8), "", ErrTooManyFrames},
		{"cap: key frame ends past it", Matcher{MaxBytes: len(login) - 1}, login, "", ErrPrereadCap},
		{"cap: exact", Matcher{MaxBytes: len(login)}, login, "A1B2C3D4", nil},
		{"cap: before the bytes arrive", Matcher{MaxBytes: 100}, mk(1, strings.Repeat(" ", 200))[:6], "", ErrPrereadCap},
		{"cap: header past it", Matcher{KeyTypes: []byte{1}, MaxBytes: 12}, cat(hb, hb), "", ErrPrereadCap},
		{"too large", Matcher{}, mk(1, strings.Repeat(" ", 5000))[:6], "", ErrTooLarge},
		{"too large under a smaller frame cap", Matcher{Frame: Config{LengthFieldOffset: 4, LengthFieldLength: 2, HeaderLength: 6, MaxFrameLength: 32}}, login, "", ErrTooLarge},
		{"bad header", Matcher{Frame: Config{LengthFieldLength: 1, LengthAdjustment: -2, HeaderLength: 1}}, []byte{0}, "", ErrBadHeader},
		{"not json", Matcher{}, mk(1, `devid=abc`), "", ErrNotJSON},
		{"key too long", Matcher{MaxKeyLen: 7}, login, "", ErrKeyTooLong},
		{"key at max length", Matcher{MaxKeyLen: 8}, login, "A1B2C3D4", nil},
		{"default max key length", Matcher{}, mk(1, `{"devid":"`+strings.Repeat("k", 129)+`"}`), "", ErrKeyTooLong},
		{"byte range", Matcher{Key: br}, mk(1, "DEV1rest"), "DEV1", nil},
		{"custom extractor checked", Matcher{Key: badExtractor{}}, login, "", ErrBadKey},
		{"custom extractor empty", Matcher{Key: emptyExtractor{}}, login, "", ErrNoKey},
		{"bad config", Matcher{Frame: Config{LengthFieldLength: 7}}, login, "", ErrBadConfig},
		{"negative max frames", Matcher{MaxFrames: -1}, login, "", ErrBadConfig},
		{"little endian header", Matcher{
			Frame: Config{LengthFieldLength: 4, LittleEndian: true, HeaderLength: 5, TypeOffset: 4},
			Key:   mustJSON(t, "a.id", 5), KeyTypes: []byte{7},
		}, append([]byte{16, 0, 0, 0, 7}, `{"a":{"id":42}}`...), "42", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, err := tt.m.Find(tt.buf)
			if !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) {
				t.Fatalf("Find() error = %v, want %v", err, tt.err)
			}
			if string(key) != tt.want {
				t.Fatalf("Find() = %q, want %q", key, tt.want)
			}
			if len(key) > 0 && !aliases(key, tt.buf) {
				t.Fatalf("key %q does not alias buf", key)
			}
			checkPrefixes(t, &tt.m, tt.buf)
		})
	}
}

// checkPrefixes asserts the split-point property: every prefix of buf gives
// ErrShort or the same answer as buf, and ErrShort only below the cap.
func checkPrefixes(t *testing.T, m *Matcher, buf []byte) {
	t.Helper()
	full, ferr := m.Find(buf)
	for i := 0; i < len(buf); i++ {
		key, err := m.Find(buf[:i])
		if err == ErrShort {
			if i >= m.PrereadLimit() {
				t.Fatalf("Find(buf[:%d]) = ErrShort at or past the cap %d", i, m.PrereadLimit())
			}
			continue
		}
		if Reason(err) != Reason(ferr) || !bytes.Equal(key, full) {
			t.Fatalf("Find(buf[:%d]) = %q, %v; Find(buf) = %q, %v", i, key, err, full, ferr)
		}
	}
}

func TestMatcherShortAtEverySplit(t *testing.T) {
	m := &Matcher{KeyTypes: []byte{1}}
	stream := cat(mk(9, `{}`), mk(2, `{"x":[1,2,3]}`), mk(1, loginBody))
	for i := 0; i < len(stream); i++ {
		if _, err := m.Find(stream[:i]); err != ErrShort {
			t.Fatalf("Find(stream[:%d]) = %v, want ErrShort", i, err)
		}
	}
	if key, err := m.Find(stream); err != nil || string(key) != "A1B2C3D4" {
		t.Fatalf("Find(stream) = %q, %v", key, err)
	}
}

func TestMatcherZeroAllocs(t *testing.T) {
	m := &Matcher{KeyTypes: []byte{1}}
	stream := cat(mk(9, `{}`), mk(1, loginBody))
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := m.Find(stream); err != nil {
			t.Fatal(err)
		}
		if _, err := m.Find(stream[:10]); err != ErrShort {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("Find allocates %v times per run, want 0", allocs)
	}
}

func TestMatcherValidate(t *testing.T) {
	if err := (&Matcher{}).Validate(); err != nil {
		t.Fatalf("zero Matcher: %v", err)
	}
	for _, m := range []Matcher{{MaxFrames: -1}, {MaxBytes: -1}, {MaxBytes: 1<<30 + 1}, {MaxKeyLen: -1}, {Frame: Config{HeaderLength: 6}}} {
		if err := m.Validate(); !errors.Is(err, ErrBadConfig) {
			t.Errorf("Validate(%+v) = %v, want ErrBadConfig", m, err)
		}
	}
	if got := (&Matcher{}).PrereadLimit(); got != DefaultMaxBytes {
		t.Errorf("PrereadLimit() = %d, want %d", got, DefaultMaxBytes)
	}
}

func mustJSON(t *testing.T, path string, headerLen int) *JSONField {
	j, err := NewJSONField(path, headerLen)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

type badExtractor struct{}

func (badExtractor) Extract(frame []byte) ([]byte, error) { return frame[:2], nil }

type emptyExtractor struct{}

func (emptyExtractor) Extract([]byte) ([]byte, error) { return nil, nil }
