package frame

import (
	"fmt"
	"strings"
)

// Extractor pulls the routing key out of one complete frame (header and
// body). The key aliases frame, so it costs no allocation; copy it before
// frame's buffer is reused.
type Extractor interface {
	Extract(frame []byte) (key []byte, err error)
}

// JSONField is an Extractor for a string or number member of the JSON object
// in the body, found by a dotted path of member names ("devid", "a.b.c").
//
// A string value's contents are returned as they are on the wire; a string
// with backslash escapes gives ErrBadKey (device ids are plain ASCII), an
// empty string ErrNoKey. A number gives its literal text ("12345"). Any other
// value, or a missing member, gives ErrNoKey. Names match on their raw
// bytes (an escaped name never matches); a name of the path that repeats in
// its object, escaped or not, gives ErrDupKey, as readers disagree on which
// member counts. The whole body must be one well-formed JSON object nesting at
// most 64 levels, or the result is ErrNotJSON. Keys outside printable ASCII
// (0x21..0x7e) give ErrBadKey. It is safe for concurrent use.
type JSONField struct {
	path      []string
	headerLen int
}

// NewJSONField returns a JSONField for path, reading the body after the
// first headerLen bytes of the frame (pass Config.HeaderLength). Path
// segments must be non-empty printable ASCII without '"' or '\'.
func NewJSONField(path string, headerLen int) (*JSONField, error) {
	if headerLen < 0 || headerLen > limitFrameLength {
		return nil, fmt.Errorf("%w: JSON field header length %d", ErrBadConfig, headerLen)
	}
	segs := strings.Split(path, ".")
	if len(segs) > maxDepth {
		return nil, fmt.Errorf("%w: JSON field path %q nests deeper than %d", ErrBadConfig, path, maxDepth)
	}
	for _, seg := range segs {
		if seg == "" {
			return nil, fmt.Errorf("%w: JSON field path %q has an empty segment", ErrBadConfig, path)
		}
		for i := 0; i < len(seg); i++ {
			if c := seg[i]; c < 0x21 || c > 0x7e || c == '"' || c == '\\' {
				return nil, fmt.Errorf("%w: JSON field path %q: byte %#x not allowed", ErrBadConfig, path, c)
			}
		}
	}
	return &JSONField{path: segs, headerLen: headerLen}, nil
}

// Path returns the dotted path.
func (j *JSONField) Path() string { return strings.Join(j.path, ".") }

// Extract implements Extractor. A frame shorter than the header length
// gives ErrBadHeader.
func (j *JSONField) Extract(frame []byte) ([]byte, error) {
	return extractJSON(frame, j.headerLen, j.path)
}

func extractJSON(frame []byte, headerLen int, path []string) ([]byte, error) {
	if len(frame) < headerLen {
		return nil, ErrBadHeader
	}
	return lookupJSON(frame[headerLen:], path)
}

// ByteRange is an Extractor for a fixed field: frame[Offset:Offset+Length],
// offsets counted from the start of the frame (header included), with
// trailing NUL and space bytes trimmed. A frame too short for the range, or
// a range that trims to nothing, gives ErrNoKey; other bytes outside
// printable ASCII (0x21..0x7e), leading spaces included, give ErrBadKey.
type ByteRange struct {
	off, n int
}

// NewByteRange returns a ByteRange of length bytes at offset.
func NewByteRange(offset, length int) (*ByteRange, error) {
	if offset < 0 || length < 1 || offset > limitFrameLength || length > limitFrameLength {
		return nil, fmt.Errorf("%w: byte range offset %d length %d", ErrBadConfig, offset, length)
	}
	return &ByteRange{off: offset, n: length}, nil
}

// Offset returns the range's offset in the frame.
func (r *ByteRange) Offset() int { return r.off }

// Len returns the range's length before trimming.
func (r *ByteRange) Len() int { return r.n }

// Extract implements Extractor.
func (r *ByteRange) Extract(frame []byte) ([]byte, error) {
	if len(frame)-r.off < r.n {
		return nil, ErrNoKey
	}
	k := frame[r.off : r.off+r.n]
	for len(k) > 0 && (k[len(k)-1] == 0 || k[len(k)-1] == ' ') {
		k = k[:len(k)-1]
	}
	return checkKey(k)
}

// checkKey returns k if it is a non-empty run of printable ASCII.
func checkKey(k []byte) ([]byte, error) {
	if len(k) == 0 {
		return nil, ErrNoKey
	}
	for _, c := range k {
		if c < 0x21 || c > 0x7e {
			return nil, ErrBadKey
		}
	}
	return k, nil
}
