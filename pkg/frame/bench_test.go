package frame

import (
	"encoding/binary"
	"encoding/json"
	"testing"
)

// loginFrame is a typical login: a 6-byte header and a ~200-byte body.
var loginFrame = mk(1, `{"devid":"862901234567890","token":"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI4NjI5MDEyMzQ1Njc4OTAifQ.sig",`+
	`"os":"android","osv":"13","app":"2.14.3","model":"Pixel 7","net":"wifi","ts":1716123456,"caps":["push","ack"]}`)

// BenchmarkKeyFrame is the hot path (impl=devgate: framing, validation of
// the whole JSON body, the devid) next to what a plain Go version costs
// (impl=encoding-json: the same header checks, then json.Unmarshal), in one
// run: make bench-micro puts them side by side with benchstat.
func BenchmarkKeyFrame(b *testing.B) {
	b.Run("impl=devgate", func(b *testing.B) {
		m := &Matcher{KeyTypes: []byte{1}}
		b.SetBytes(int64(len(loginFrame)))
		b.ReportAllocs()
		for b.Loop() {
			if k, err := m.Find(loginFrame); err != nil || len(k) != 15 {
				b.Fatal(k, err)
			}
		}
	})
	b.Run("impl=encoding-json", func(b *testing.B) {
		b.SetBytes(int64(len(loginFrame)))
		b.ReportAllocs()
		for b.Loop() {
			if len(loginFrame) < 6 || loginFrame[0] != 1 {
				b.Fatal("header")
			}
			n := int(binary.BigEndian.Uint16(loginFrame[4:]))
			var v struct {
				Devid string `json:"devid"`
			}
			if err := json.Unmarshal(loginFrame[6:6+n], &v); err != nil || len(v.Devid) != 15 {
				b.Fatal(v.Devid, err)
			}
		}
	})
}

func BenchmarkMatcherLogin(b *testing.B) {
	m := &Matcher{KeyTypes: []byte{1}}
	b.SetBytes(int64(len(loginFrame)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.Find(loginFrame); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMatcherThirdFrame(b *testing.B) {
	m := &Matcher{KeyTypes: []byte{1}}
	stream := cat(mk(9, `{}`), mk(9, `{}`), loginFrame)
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.Find(stream); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMatcherShort(b *testing.B) {
	m := &Matcher{}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.Find(loginFrame[:100]); err != ErrShort {
			b.Fatal(err)
		}
	}
}

func BenchmarkByteRange(b *testing.B) {
	r, _ := NewByteRange(6, 16)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Extract(loginFrame); err != nil {
			b.Fatal(err)
		}
	}
}
