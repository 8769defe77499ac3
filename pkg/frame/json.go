package frame

// A small JSON scanner for the hot path. It validates the whole body with the
// grammar of RFC 8259 (what encoding/json.Valid accepts) in one pass, without
// allocating or recursing, and notes where the value at a member path lies.
// It is one loop over local variables because per-token function calls
// cost more than the bytes do in a ~200-byte login body.

import (
	"encoding/binary"
	"math/bits"
)

// maxDepth bounds nesting of objects and arrays, the root object included.
const maxDepth = 64

// Kinds of the value found at the path.
const (
	kindNone    = iota // path not found
	kindString         // string without escapes
	kindEscaped        // string with backslash escapes
	kindNumber
	kindOther // object, array, true, false, null
)

// isArray marks an open array in lookupJSON's stack of containers.
const isArray = -2

// Scanner states.
const (
	stValue = iota // a value starts at i
	stKey          // a member name starts at i
	stAfter        // a value ended just before i
)

// lookupJSON returns the string or number at path in the JSON object body.
// Names are compared on their raw bytes, so an escaped name ("dev\u0069d")
// never matches. A second member named like the path segment of an object
// on the path (escaped or not) gives ErrDupKey: readers disagree on which
// one counts (Jackson and encoding/json take the last).
func lookupJSON(b []byte, path []string) ([]byte, error) {
	var (
		// Per open container: an object's path level (segments matched to
		// reach it, or -1 when off the path), or isArray. int8 keeps this
		// small to zero: paths are at most maxDepth long.
		open    [maxDepth]int8
		depth   int
		matched int // path segments matched so far on the way down
		level   int // path level of the value at i, or -1
		kind    int
		vs, ve  int // the target value's bytes (string contents without quotes)
		state   = stValue
		seen    uint64 // bit lv: the on-path object of level lv named path[lv]
		dup     bool
	)
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return nil, ErrNotJSON
	}
	for {
		switch state {
		case stValue:
			if i >= len(b) {
				return nil, ErrNotJSON
			}
			target := level == len(path)
			start := i
			state = stAfter
			switch c := b[i]; {
			case c == '{' || c == '[':
				if depth == maxDepth {
					return nil, ErrNotJSON
				}
				if target {
					kind = kindOther
				}
				open[depth] = int8(level)
				if c == '[' {
					open[depth] = isArray
				}
				depth++
				i = skipWS(b, i+1)
				switch {
				case i < len(b) && b[i] == c+2: // '}' is '{'+2, ']' is '['+2
					i++
					depth--
				case c == '{':
					state = stKey
				default:
					state, level = stValue, -1
				}
			case c == '"':
				var esc, ok bool
				if i, esc, ok = scanString(b, i); !ok {
					return nil, ErrNotJSON
				}
				if target {
					kind, vs, ve = kindString, start+1, i-1
					if esc {
						kind = kindEscaped
					}
				}
			case c == '-' || c >= '0' && c <= '9':
				var ok bool
				if i, ok = scanNumber(b, i); !ok {
					return nil, ErrNotJSON
				}
				if target {
					kind, vs, ve = kindNumber, start, i
				}
			default:
				var ok bool
				if i, ok = scanLiteral(b, i); !ok {
					return nil, ErrNotJSON
				}
				if target {
					kind = kindOther
				}
			}

		case stKey:
			if i >= len(b) || b[i] != '"' {
				return nil, ErrNotJSON
			}
			ks := i + 1
			var esc, ok bool
			if i, esc, ok = scanString(b, i); !ok {
				return nil, ErrNotJSON
			}
			name := b[ks : i-1]
			i = skipWS(b, i)
			if i >= len(b) || b[i] != ':' {
				return nil, ErrNotJSON
			}
			i = skipWS(b, i+1)
			// Only the first member of an on-path object named like its
			// segment descends, and only if its name is unescaped; any
			// second one (decoded name) makes the body ambiguous.
			level = -1
			if lv := int(open[depth-1]); lv >= 0 && lv < len(path) &&
				(!esc && string(name) == path[lv] || esc && escapedNameIs(name, path[lv])) {
				bit := uint64(1) << lv
				if seen&bit != 0 {
					dup = true
				} else if !esc {
					matched++
					level = lv + 1
				}
				seen |= bit
			}
			state = stValue

		case stAfter:
			if depth == 0 {
				if skipWS(b, i) != len(b) {
					return nil, ErrNotJSON
				}
				if dup {
					return nil, ErrDupKey
				}
				switch kind {
				case kindString, kindNumber:
					return checkKey(b[vs:ve])
				case kindEscaped:
					return nil, ErrBadKey
				}
				return nil, ErrNoKey
			}
			i = skipWS(b, i)
			if i >= len(b) {
				return nil, ErrNotJSON
			}
			arr := open[depth-1] == isArray
			switch c := b[i]; {
			case c == ',':
				i = skipWS(b, i+1)
				state, level = stKey, -1
				if arr {
					state = stValue
				}
			case c == '}' && !arr || c == ']' && arr:
				i++
				depth--
			default:
				return nil, ErrNotJSON
			}
		}
	}
}

// escapedNameIs says whether the member name raw (between the quotes,
// with backslash escapes) decodes to seg, which is printable ASCII without
// '"' or '\\'. It does not allocate.
func escapedNameIs(raw []byte, seg string) bool {
	j := 0
	for i := 0; i < len(raw); j++ {
		c := raw[i]
		i++
		if c == '\\' { // scanString checked the escape is complete
			switch c = raw[i]; c {
			case 'b', 'f', 'n', 'r', 't':
				return false // control characters are never in seg
			case 'u':
				var r rune
				for _, h := range raw[i+1 : i+5] {
					r = r<<4 | rune(unhex(h))
				}
				if r >= 0x80 {
					return false
				}
				c = byte(r)
				i += 4
			}
			i++
		}
		if j >= len(seg) || seg[j] != c {
			return false
		}
	}
	return j == len(seg)
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c >= 'a':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\n' || b[i] == '\r' || b[i] == '\t') {
		i++
	}
	return i
}

// strPlain marks the bytes a string scan passes over: all but '"', '\\' and
// control characters.
var strPlain = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// scanString scans the string whose quote is at b[i] and returns the index
// after the closing quote, and whether it holds backslash escapes.
func scanString(b []byte, i int) (end int, esc, ok bool) {
	const lsb, msb = 0x0101010101010101, 0x8080808080808080
	for i++; ; {
		// Find the next '"', '\\' or control byte 8 bytes at a time with the
		// "has zero byte" trick (Hacker's Delight 6-1): the lowest flagged
		// byte is exact, as borrows only run upwards. Tokens are long.
		if len(b)-i >= 8 {
			w := binary.LittleEndian.Uint64(b[i:])
			q, bs := w^(lsb*'"'), w^(lsb*'\\')
			t := ((q-lsb)&^q | (bs-lsb)&^bs | (w-lsb*0x20)&^w) & msb
			if t == 0 {
				i += 8
				continue
			}
			i += bits.TrailingZeros64(t) >> 3
		} else {
			for i < len(b) && strPlain[b[i]] {
				i++
			}
		}
		if i >= len(b) || b[i] < 0x20 {
			return 0, false, false
		}
		if b[i] == '"' {
			return i + 1, esc, true
		}
		esc = true // b[i] is '\\'
		if i+1 >= len(b) {
			return 0, false, false
		}
		switch b[i+1] {
		case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			i += 2
		case 'u':
			if len(b)-i < 6 || !isHex(b[i+2]) || !isHex(b[i+3]) || !isHex(b[i+4]) || !isHex(b[i+5]) {
				return 0, false, false
			}
			i += 6
		default:
			return 0, false, false
		}
	}
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// scanNumber scans -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? at b[i]
// and returns the index after it.
func scanNumber(b []byte, i int) (int, bool) {
	if b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		i = skipDigits(b, i)
	default:
		return 0, false
	}
	if i < len(b) && b[i] == '.' {
		j := skipDigits(b, i+1)
		if j == i+1 {
			return 0, false
		}
		i = j
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := skipDigits(b, i)
		if j == i {
			return 0, false
		}
		i = j
	}
	return i, true
}

func skipDigits(b []byte, i int) int {
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	return i
}

// scanLiteral scans true, false or null at b[i].
func scanLiteral(b []byte, i int) (int, bool) {
	for _, lit := range [...]string{"true", "false", "null"} {
		if len(b)-i >= len(lit) && string(b[i:i+len(lit)]) == lit {
			return i + len(lit), true
		}
	}
	return 0, false
}
