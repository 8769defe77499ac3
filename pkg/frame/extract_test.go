package frame

import (
	"errors"
	"strings"
	"testing"
)

func TestJSONField(t *testing.T) {
	deep := strings.Repeat("[", 62) + strings.Repeat("]", 62)
	tests := []struct {
		name string
		path string
		body string
		want string // key, or "" when err is set
		err  error
	}{
		{"plain", "devid", `{"devid":"abc"}`, "abc", nil},
		{"not first", "devid", `{"token":"t","os":"android","devid":"D-1"}`, "D-1", nil},
		{"whitespace", "devid", " \t\r\n{ \"devid\" \n:\t \"abc\" \r}\n ", "abc", nil},
		{"number", "devid", `{"devid":12345}`, "12345", nil},
		{"number exp", "devid", `{"devid":-1.5E+3}`, "-1.5E+3", nil},
		{"number zero", "devid", `{"devid":0}`, "0", nil},
		{"nested path", "a.b.c", `{"a":{"x":[1,{"c":"no"}],"b":{"c":"yes"}}}`, "yes", nil},
		{"same name off path", "devid", `{"x":{"devid":"no"},"y":["devid"],"devid":"yes"}`, "yes", nil},
		{"prefix name", "devid", `{"devidx":"no","devi":"no","devid":"yes"}`, "yes", nil},
		{"escapes elsewhere", "devid", `{"t":"a\"b\\c\/\u00e9\n","k\"ey":1,"devid":"ok"}`, "ok", nil},
		{"quote in string", "devid", `{"s":"\"devid\":\"no\"","devid":"yes"}`, "yes", nil},
		{"braces in strings", "devid", `{"s":"}]{[","devid":"yes"}`, "yes", nil},
		{"utf8 elsewhere", "devid", `{"name":"设备","devid":"abc"}`, "abc", nil},
		{"all value kinds", "devid", `{"a":true,"b":false,"c":null,"d":[],"e":{},"f":-0.0e-0,"devid":"k"}`, "k", nil},
		{"deep elsewhere", "devid", `{"d":` + deep + `,"devid":"k"}`, "k", nil},
		{"duplicate", "devid", `{"devid":"first","devid":"second"}`, "", ErrDupKey},
		{"duplicate same value", "devid", `{"devid":"k","x":1,"devid":"k"}`, "", ErrDupKey},
		{"duplicate first empty", "devid", `{"devid":"","devid":"second"}`, "", ErrDupKey},
		{"duplicate parent", "a.b", `{"a":{"x":1},"a":{"b":"k"}}`, "", ErrDupKey},
		{"duplicate parent not object", "a.b", `{"a":1,"a":{"b":"k"}}`, "", ErrDupKey},
		{"duplicate inner", "a.b", `{"a":{"b":"k1","b":"k2"},"b":"k3"}`, "", ErrDupKey},
		{"duplicate escaped after", "devid", `{"devid":"a","dev\u0069d":"b"}`, "", ErrDupKey},
		{"duplicate escaped before", "devid", `{"d\u0065vid":"b","devid":"a"}`, "", ErrDupKey},
		{"duplicate escaped slash", "a/b", `{"a/b":"x","a\/b":"y"}`, "", ErrDupKey},
		{"duplicate off path", "a.b", `{"a":{"b":"k"},"x":{"b":1,"b":2},"b":3,"b":4}`, "k", nil},
		{"duplicate in array", "devid", `{"l":[{"devid":1},{"devid":2}],"devid":"k"}`, "k", nil},
		{"duplicate other member", "devid", `{"os":"a","devid":"k","os":"b"}`, "k", nil},
		{"escaped name not the segment", "devid", `{"devid":"k","dev\u0049d":"x","de\nvid":1}`, "k", nil},
		{"duplicate in bad json", "devid", `{"devid":"a","devid":"b"`, "", ErrNotJSON},
		{"missing", "devid", `{"dev":"abc"}`, "", ErrNoKey},
		{"empty object", "devid", `{}`, "", ErrNoKey},
		{"empty string", "devid", `{"devid":""}`, "", ErrNoKey},
		{"object value", "devid", `{"devid":{"id":"x"}}`, "", ErrNoKey},
		{"array value", "devid", `{"devid":["x"]}`, "", ErrNoKey},
		{"bool value", "devid", `{"devid":true}`, "", ErrNoKey},
		{"null value", "devid", `{"devid":null}`, "", ErrNoKey},
		{"path through string", "a.b", `{"a":"b"}`, "", ErrNoKey},
		{"path through array", "a.b", `{"a":[{"b":"k"}]}`, "", ErrNoKey},
		{"escaped value", "devid", `{"devid":"ab\u0063"}`, "", ErrBadKey},
		{"escaped slash", "devid", `{"devid":"a\/b"}`, "", ErrBadKey},
		{"escaped name never matches", "devid", `{"dev\u0069d":"abc"}`, "", ErrNoKey},
		{"space in key", "devid", `{"devid":"a b"}`, "", ErrBadKey},
		{"non-ascii key", "devid", `{"devid":"设备"}`, "", ErrBadKey},
		{"del in key", "devid", "{\"devid\":\"a\x7f\"}", "", ErrBadKey},
		{"not object", "devid", `["devid","abc"]`, "", ErrNotJSON},
		{"string body", "devid", `"abc"`, "", ErrNotJSON},
		{"empty body", "devid", ``, "", ErrNotJSON},
		{"truncated after key", "devid", `{"devid":"abc"`, "", ErrNotJSON},
		{"trailing garbage", "devid", `{"devid":"abc"}x`, "", ErrNotJSON},
		{"two objects", "devid", `{"devid":"abc"}{}`, "", ErrNotJSON},
		{"trailing comma", "devid", `{"devid":"abc",}`, "", ErrNotJSON},
		{"single quotes", "devid", `{'devid':'abc'}`, "", ErrNotJSON},
		{"bare name", "devid", `{devid:"abc"}`, "", ErrNotJSON},
		{"control char in string", "devid", "{\"t\":\"a\tb\",\"devid\":\"abc\"}", "", ErrNotJSON},
		{"bad escape", "devid", `{"t":"\x","devid":"abc"}`, "", ErrNotJSON},
		{"short unicode escape", "devid", `{"t":"\u12","devid":"abc"}`, "", ErrNotJSON},
		{"leading zero", "devid", `{"devid":012}`, "", ErrNotJSON},
		{"bare minus", "devid", `{"devid":-}`, "", ErrNotJSON},
		{"dot without digits", "devid", `{"devid":1.}`, "", ErrNotJSON},
		{"exp without digits", "devid", `{"devid":1e+}`, "", ErrNotJSON},
		{"bad literal", "devid", `{"a":nul,"devid":"abc"}`, "", ErrNotJSON},
		{"unclosed array", "devid", `{"a":[1,2,"devid":"abc"}`, "", ErrNotJSON},
		{"depth 64", "devid", `{"d":[` + deep + `],"devid":"k"}`, "k", nil},
		{"depth 65", "devid", `{"d":[[` + deep + `]],"devid":"k"}`, "", ErrNotJSON},
		{"depth 65 objects", "devid", `{"devid":"k","d":` + strings.Repeat(`{"a":`, 64) + `1` + strings.Repeat("}", 64) + `}`, "", ErrNotJSON},
		{"nul byte", "devid", "{\"devid\":\"abc\"}\x00", "", ErrNotJSON},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j, err := NewJSONField(tt.path, 6)
			if err != nil {
				t.Fatal(err)
			}
			frame := append([]byte("HEADER"), tt.body...)
			key, err := j.Extract(frame)
			if !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) {
				t.Fatalf("Extract(%s) error = %v, want %v", tt.body, err, tt.err)
			}
			if string(key) != tt.want {
				t.Fatalf("Extract(%s) = %q, want %q", tt.body, key, tt.want)
			}
			if len(key) > 0 && !aliases(key, frame) {
				t.Fatalf("key %q does not alias the frame", key)
			}
		})
	}
}

func TestJSONFieldShortFrame(t *testing.T) {
	j, _ := NewJSONField("devid", 6)
	if _, err := j.Extract([]byte("HEAD")); !errors.Is(err, ErrBadHeader) {
		t.Fatalf("Extract(short) = %v, want ErrBadHeader", err)
	}
}

func TestNewJSONField(t *testing.T) {
	for _, path := range []string{"", ".", "a.", ".a", "a..b", "a b", `a"b`, `a\b`, "é", "a\x00", strings.Repeat("a.", 64) + "a"} {
		if _, err := NewJSONField(path, 6); !errors.Is(err, ErrBadConfig) {
			t.Errorf("NewJSONField(%q) = %v, want ErrBadConfig", path, err)
		}
	}
	if _, err := NewJSONField("devid", -1); !errors.Is(err, ErrBadConfig) {
		t.Errorf("NewJSONField(headerLen -1) = %v, want ErrBadConfig", err)
	}
	j, err := NewJSONField("login.dev.id", 0)
	if err != nil || j.Path() != "login.dev.id" {
		t.Fatalf("NewJSONField(login.dev.id) = %v, %v", j, err)
	}
}

func TestByteRange(t *testing.T) {
	tests := []struct {
		name   string
		off, n int
		frame  string
		want   string
		err    error
	}{
		{"exact", 6, 4, "HEADERabcd", "abcd", nil},
		{"inside header", 1, 2, "HEADER", "EA", nil},
		{"trailing nul", 6, 6, "HEADERab\x00\x00\x00\x00", "ab", nil},
		{"trailing space", 6, 6, "HEADERab  \x00 ", "ab", nil},
		{"inner nul kept then bad", 6, 4, "HEADERa\x00b\x00", "", ErrBadKey},
		{"range shorter than frame", 6, 2, "HEADERabcd", "ab", nil},
		{"leading space", 6, 4, "HEADER ab ", "", ErrBadKey},
		{"all padding", 6, 4, "HEADER\x00 \x00\x00", "", ErrNoKey},
		{"frame too short", 6, 4, "HEADERabc", "", ErrNoKey},
		{"offset past frame", 20, 1, "HEADER", "", ErrNoKey},
		{"non-ascii", 6, 2, "HEADER\xc3\xa9", "", ErrBadKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := NewByteRange(tt.off, tt.n)
			if err != nil {
				t.Fatal(err)
			}
			frame := []byte(tt.frame)
			key, err := r.Extract(frame)
			if !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) {
				t.Fatalf("Extract(%q) error = %v, want %v", tt.frame, err, tt.err)
			}
			if string(key) != tt.want {
				t.Fatalf("Extract(%q) = %q, want %q", tt.frame, key, tt.want)
			}
			if len(key) > 0 && !aliases(key, frame) {
				t.Fatalf("key %q does not alias the frame", key)
			}
		})
	}
	for _, bad := range [][2]int{{-1, 4}, {0, 0}, {0, -1}, {1 << 31, 1}} {
		if _, err := NewByteRange(bad[0], bad[1]); !errors.Is(err, ErrBadConfig) {
			t.Errorf("NewByteRange(%d, %d) = %v, want ErrBadConfig", bad[0], bad[1], err)
		}
	}
}

// aliases reports whether key is a sub-slice of buf (same memory, in bounds).
func aliases(key, buf []byte) bool {
	if len(key) == 0 {
		return true
	}
	for i := range buf {
		if &buf[i] == &key[0] {
			return i+len(key) <= len(buf)
		}
	}
	return false
}

// TestScanString checks the 8-byte fast path of scanString against a byte
// loop: every byte value at every position of strings around the word size.
func TestScanString(t *testing.T) {
	slow := func(b []byte) (int, bool, bool) {
		esc := false
		for i := 1; i < len(b); i++ {
			switch c := b[i]; {
			case c == '"':
				return i + 1, esc, true
			case c < 0x20:
				return 0, false, false
			case c == '\\':
				if i+1 >= len(b) || !strings.ContainsRune(`"\/bfnrt`, rune(b[i+1])) {
					return 0, false, false // no \u in these inputs
				}
				esc = true
				i++
			}
		}
		return 0, false, false
	}
	for n := 0; n <= 20; n++ {
		for pos := 0; pos < n; pos++ {
			for c := 0; c < 256; c++ {
				b := append([]byte{'"'}, strings.Repeat("\xff", n)...)
				b = append(b, '"')
				b[1+pos] = byte(c)
				if pos > 0 {
					b[pos] = 0x21 // a neighbour that borrows
				}
				end, esc, ok := scanString(b, 0)
				wend, wesc, wok := slow(b)
				if end != wend || esc != wesc || ok != wok {
					t.Fatalf("scanString(%q) = %d, %v, %v; want %d, %v, %v", b, end, esc, ok, wend, wesc, wok)
				}
			}
		}
	}
}
