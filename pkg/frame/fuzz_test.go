package frame

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math/big"
	"strings"
	"testing"
)

// Seeds from testdata/vectors.json; go test also runs every seed and every
// file under testdata/fuzz as a regression test.

func FuzzFrameLen(f *testing.F) {
	for _, v := range loadVectors(f) {
		in, _ := hex.DecodeString(v.Input)
		f.Add(in, uint8(4), uint8(2), int16(0), uint8(6), false, uint16(4096))
		f.Add(in, uint8(0), uint8(4), int16(-4), uint8(5), true, uint16(0))
		f.Add(in, uint8(1), uint8(8), int16(3), uint8(9), false, uint16(65535))
	}
	f.Fuzz(func(t *testing.T, buf []byte, off, lfl uint8, adj int16, hdr uint8, little bool, maxLen uint16) {
		c := Config{LengthFieldOffset: int(off % 16), LengthFieldLength: int(lfl % 10), LengthAdjustment: int(adj),
			HeaderLength: int(hdr % 32), LittleEndian: little, MaxFrameLength: int(maxLen)}
		n, err := c.FrameLen(buf)
		if c.Validate() != nil {
			if !errors.Is(err, ErrBadConfig) {
				t.Fatalf("invalid %+v: FrameLen = %d, %v", c, n, err)
			}
			return
		}
		end := c.LengthFieldOffset + c.LengthFieldLength
		if len(buf) < end {
			if err != ErrShort {
				t.Fatalf("%+v: FrameLen(% x) = %d, %v; want ErrShort", c, buf, n, err)
			}
			return
		}
		// Reference: the Netty rule in arbitrary precision.
		field := append([]byte(nil), buf[c.LengthFieldOffset:end]...)
		if little {
			for i, j := 0, len(field)-1; i < j; i, j = i+1, j-1 {
				field[i], field[j] = field[j], field[i]
			}
		}
		want := new(big.Int).SetBytes(field)
		want.Add(want, big.NewInt(int64(end+c.LengthAdjustment)))
		switch {
		case want.Cmp(big.NewInt(int64(c.HeaderLength))) < 0:
			if !errors.Is(err, ErrBadHeader) {
				t.Fatalf("%+v: FrameLen(% x) = %d, %v; want ErrBadHeader (%v)", c, buf, n, err, want)
			}
		case want.Cmp(big.NewInt(int64(c.maxFrameLength()))) > 0:
			if !errors.Is(err, ErrTooLarge) {
				t.Fatalf("%+v: FrameLen(% x) = %d, %v; want ErrTooLarge (%v)", c, buf, n, err, want)
			}
		default:
			if err != nil || int64(n) != want.Int64() {
				t.Fatalf("%+v: FrameLen(% x) = %d, %v; want %v", c, buf, n, err, want)
			}
		}
	})
}

func FuzzJSONField(f *testing.F) {
	for _, v := range loadVectors(f) {
		in, _ := hex.DecodeString(v.Input)
		if len(in) > 6 {
			f.Add(in[6:], "devid")
		}
	}
	f.Add([]byte(`{"a":{"b":{"c":"k"}},"a":1}`), "a.b.c")
	f.Add([]byte(`{"a":[{"b":"x"}],"b":{"a":"y"}}`), "b.a")
	f.Add([]byte(`{"a":{"b":"x","c":1,"b":"y"}}`), "a.b")
	f.Add([]byte(`{"devid":"x","dev\u0069d":"y"}`), "devid")
	f.Add([]byte(`{"a\/b":"x","a/b":"y","c":{"d":1,"d":2}}`), "a/b")
	f.Fuzz(func(t *testing.T, body []byte, path string) {
		j, err := NewJSONField(path, 0)
		if err != nil {
			return
		}
		key, err := j.Extract(body)
		if err == nil {
			if !aliases(key, body) || len(key) == 0 {
				t.Fatalf("key %q does not alias the body", key)
			}
			if _, err := checkKey(key); err != nil {
				t.Fatalf("key %q: %v", key, err)
			}
		}
		wantKey, wantReason := refJSONField(body, j.path)
		if Reason(err) != wantReason || string(key) != wantKey {
			t.Fatalf("Extract(%q) at %q = %q, %v; encoding/json says %q, %s", body, path, key, err, wantKey, wantReason)
		}
		// A key the gateway routes by is the one a last-member-wins reader
		// (json.Unmarshal, Jackson) finds: the backend sees the same device.
		if err == nil {
			if last, ok := lastWins(body, j.path); !ok || last != string(key) {
				t.Fatalf("Extract(%q) at %q = %q; json.Unmarshal reads %q (%v)", body, path, key, last, ok)
			}
		}
	})
}

// lastWins reads the value at path as json.Unmarshal does: escapes in names
// decoded, the last of duplicate members kept.
func lastWins(body []byte, path []string) (string, bool) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if dec.Decode(&v) != nil {
		return "", false
	}
	for _, seg := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return "", false
		}
		v = m[seg]
	}
	switch v := v.(type) {
	case string:
		return v, true
	case json.Number:
		return v.String(), true
	}
	return "", false
}

// refJSONField is FuzzJSONField's oracle: the same rules as JSONField (names
// match on raw bytes, depth <= 64, a path name twice in its object, with
// names decoded, is dup_key), read with encoding/json's Decoder, which by
// itself would keep the last duplicate.
func refJSONField(body []byte, path []string) (key, reason string) {
	if !json.Valid(body) {
		return "", "not_json"
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if tok, _ := dec.Token(); tok != json.Delim('{') {
		return "", "not_json"
	}
	r := refWalk{dec: dec, body: body, path: path, depth: 1, reason: "no_key"}
	r.object(0)
	if r.tooDeep {
		return "", "not_json"
	}
	if r.dup {
		return "", "dup_key"
	}
	if r.reason == "ok" {
		if _, err := checkKey([]byte(r.key)); err != nil {
			return "", Reason(err)
		}
	}
	return r.key, r.reason
}

type refWalk struct {
	dec         *json.Decoder
	body        []byte
	path        []string
	depth       int
	matched     int
	tooDeep     bool
	dup         bool
	key, reason string
}

// raw returns the bytes of the token just read, from the offset before it.
func (r *refWalk) raw(before int64) []byte {
	return bytes.TrimLeft(r.body[before:r.dec.InputOffset()], " \t\r\n,:")
}

// object reads the members of an object whose '{' was just read.
func (r *refWalk) object(level int) {
	seen := 0 // members named path[level], names decoded
	for r.dec.More() {
		before := r.dec.InputOffset()
		tok, _ := r.dec.Token()
		name := r.raw(before)
		name = name[1 : len(name)-1]
		child := -1
		if level >= 0 && level < len(r.path) && tok == r.path[level] {
			if seen++; seen > 1 {
				r.dup = true
			}
		}
		if level >= 0 && level == r.matched && level < len(r.path) && string(name) == r.path[level] && seen == 1 {
			r.matched++
			child = level + 1
		}
		r.value(child)
	}
	r.dec.Token() // '}'
}

func (r *refWalk) value(level int) {
	before := r.dec.InputOffset()
	tok, _ := r.dec.Token()
	target := level == len(r.path)
	switch tok := tok.(type) {
	case json.Delim: // '{' or '['
		if r.depth++; r.depth > maxDepth {
			r.tooDeep = true
		}
		if tok == '{' {
			r.object(level)
		} else {
			for r.dec.More() {
				r.value(-1)
			}
			r.dec.Token()
		}
		r.depth--
	case string:
		if target {
			raw := r.raw(before)
			raw = raw[1 : len(raw)-1]
			switch {
			case bytes.IndexByte(raw, '\\') >= 0:
				r.reason = "bad_key"
			case tok != "":
				r.key, r.reason = tok, "ok"
			}
		}
		return
	case json.Number:
		if target {
			r.key, r.reason = tok.String(), "ok"
		}
		return
	}
}

func FuzzByteRange(f *testing.F) {
	for _, v := range loadVectors(f) {
		in, _ := hex.DecodeString(v.Input)
		f.Add(in, uint16(6), uint16(12))
	}
	f.Add([]byte("HEADERab\x00 \x00"), uint16(6), uint16(5))
	f.Fuzz(func(t *testing.T, frame []byte, off, n uint16) {
		r, err := NewByteRange(int(off), int(n))
		if err != nil {
			if n != 0 {
				t.Fatalf("NewByteRange(%d, %d): %v", off, n, err)
			}
			return
		}
		key, err := r.Extract(frame)
		want := ""
		if int(off)+int(n) <= len(frame) {
			want = strings.TrimRight(string(frame[off:int(off)+int(n)]), "\x00 ")
		}
		if want == "" {
			if !errors.Is(err, ErrNoKey) {
				t.Fatalf("Extract(%q) = %q, %v; want ErrNoKey", frame, key, err)
			}
			return
		}
		if _, cerr := checkKey([]byte(want)); cerr != nil {
			if !errors.Is(err, ErrBadKey) {
				t.Fatalf("Extract(%q) = %q, %v; want ErrBadKey", frame, key, err)
			}
			return
		}
		if err != nil || string(key) != want || !aliases(key, frame[off:]) {
			t.Fatalf("Extract(%q) = %q, %v; want %q aliasing the frame", frame, key, err, want)
		}
	})
}

// fuzzConfigs are the framings FuzzMatcher picks from.
var fuzzConfigs = []Config{
	DefaultConfig(),
	{LengthFieldLength: 4, LittleEndian: true, HeaderLength: 5, TypeOffset: 4, MaxFrameLength: 512},
	{LengthFieldLength: 2, LengthAdjustment: -3, HeaderLength: 3, TypeOffset: 2},
	{LengthFieldOffset: 1, LengthFieldLength: 1, HeaderLength: 2, MaxFrameLength: 64},
}

func FuzzMatcher(f *testing.F) {
	for _, v := range loadVectors(f) {
		m, in := v.build(f)
		types := m.KeyTypes
		if types == nil {
			types = []byte{}
		}
		f.Add(in, types, uint8(m.MaxFrames), uint16(m.MaxBytes), uint8(m.MaxKeyLen), uint16(len(in)/2), uint8(0), false)
	}
	f.Fuzz(func(t *testing.T, buf, keyTypes []byte, maxFrames uint8, maxBytes uint16, maxKeyLen uint8, split uint16, cfg uint8, byteRange bool) {
		m := &Matcher{Frame: fuzzConfigs[int(cfg)%len(fuzzConfigs)], KeyTypes: keyTypes,
			MaxFrames: int(maxFrames), MaxBytes: int(maxBytes), MaxKeyLen: int(maxKeyLen)}
		if byteRange {
			m.Key, _ = NewByteRange(m.Frame.HeaderLength, 8)
		}
		key, err := m.Find(buf)
		switch {
		case err == nil:
			if !aliases(key, buf) {
				t.Fatalf("key %q does not alias buf", key)
			}
			if len(key) > m.maxKeyLen() {
				t.Fatalf("key %q longer than %d", key, m.maxKeyLen())
			}
			if _, cerr := checkKey(key); cerr != nil {
				t.Fatalf("key %q: %v", key, cerr)
			}
		case err == ErrShort:
			if len(buf) >= m.PrereadLimit() {
				t.Fatalf("ErrShort with %d bytes, cap %d", len(buf), m.PrereadLimit())
			}
		case Reason(err) == "other" || Reason(err) == "bad_config":
			t.Fatalf("Find: unexpected error %v", err)
		}
		// A prefix gives ErrShort or the same answer.
		k := int(split) % (len(buf) + 1)
		pkey, perr := m.Find(buf[:k])
		if perr != ErrShort && (Reason(perr) != Reason(err) || !bytes.Equal(pkey, key)) {
			t.Fatalf("Find(buf[:%d]) = %q, %v; Find(buf) = %q, %v", k, pkey, perr, key, err)
		}
	})
}
