package demo

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/devgate/devgate/pkg/frame"
)

// TestReplyOtherFraming checks replies under non-default framings: the
// reply must be one whole frame by the same Config.
func TestReplyOtherFraming(t *testing.T) {
	le := frame.Config{ // u32 little-endian length of the whole frame, then type
		LengthFieldLength: 4, LengthAdjustment: -4, HeaderLength: 5,
		LittleEndian: true, TypeOffset: 4, MaxFrameLength: 1 << 16,
	}
	one := frame.Config{ // u8 body length after a 3-byte prefix
		LengthFieldOffset: 3, LengthFieldLength: 1, HeaderLength: 4, MaxFrameLength: 300,
	}
	for _, tc := range []struct {
		name string
		cfg  frame.Config
		hdr  []byte // request header, length field left zero
	}{
		{"le32", le, []byte{0, 0, 0, 0, 1}},
		{"u8", one, []byte{1, 2, 3, 0}},
		{"default", frame.DefaultConfig(), []byte{1, 1, 0, 0, 0, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := &Backend{ID: `b"1`, Frame: tc.cfg}
			if err := b.init(); err != nil {
				t.Fatal(err)
			}
			req := append(append([]byte{}, tc.hdr...), `{"devid":"d-7","os":"x"}`...)
			if err := putLength(req, tc.cfg); err != nil {
				t.Fatal(err)
			}
			if n, err := tc.cfg.FrameLen(req); err != nil || n != len(req) {
				t.Fatalf("request FrameLen %d, %v; want %d", n, err, len(req))
			}
			out, _, err := b.reply(nil, nil, req)
			if err != nil {
				t.Fatal(err)
			}
			if n, err := tc.cfg.FrameLen(out); err != nil || n != len(out) {
				t.Fatalf("reply FrameLen %d, %v; want %d", n, err, len(out))
			}
			var got struct{ Backend, Devid string }
			if err := json.Unmarshal(out[tc.cfg.HeaderLength:], &got); err != nil {
				t.Fatalf("reply body %q: %v", out[tc.cfg.HeaderLength:], err)
			}
			if got.Backend != `b"1` || got.Devid != "d-7" || out[tc.cfg.TypeOffset] != req[tc.cfg.TypeOffset] {
				t.Fatalf("reply %q", out)
			}
		})
	}
}

func TestPutLengthOverflow(t *testing.T) {
	cfg := frame.Config{LengthFieldLength: 1, HeaderLength: 1}
	if err := putLength(make([]byte, 256), cfg); err != nil {
		t.Fatalf("256-byte frame (value 255) in a u8 field: %v", err)
	}
	if err := putLength(make([]byte, 257), cfg); !errors.Is(err, errUnframeable) {
		t.Fatalf("257-byte frame in a u8 field: %v", err)
	}
	cfg.LengthAdjustment = 10 // value would be negative
	if err := putLength(make([]byte, 5), cfg); !errors.Is(err, errUnframeable) {
		t.Fatalf("negative value: %v", err)
	}
}

func TestAppendJSONString(t *testing.T) {
	got := appendJSONString(nil, []byte("a\"b\\c\x01\x1fé"))
	var s string
	if err := json.Unmarshal(append(append([]byte{'"'}, got...), '"'), &s); err != nil {
		t.Fatalf("%q: %v", got, err)
	}
	if s != "a\"b\\c\x01\x1fé" {
		t.Fatalf("round trip %q", s)
	}
}

func BenchmarkReply(b *testing.B) {
	be := &Backend{ID: "backend-1"}
	if err := be.init(); err != nil {
		b.Fatal(err)
	}
	req := []byte{1, 1, 0, 0, 0, 0}
	req = append(req, `{"devid":"dev-000042","token":"0123456789abcdef0123456789abcdef","os":"android","ver":"1.0"}`...)
	putLength(req, be.cfg)
	out, devid := make([]byte, 0, 256), make([]byte, 0, 32)
	b.ReportAllocs()
	for b.Loop() {
		out, devid, _ = be.reply(out[:0], devid, req)
	}
}

// BenchmarkReplySeq is a numbered heartbeat's answer: no allocation.
func BenchmarkReplySeq(b *testing.B) {
	be := &Backend{ID: "backend-1"}
	if err := be.init(); err != nil {
		b.Fatal(err)
	}
	req := append([]byte{2, 1, 0, 0, 0, 0}, `{"seq":123456789}`...)
	putLength(req, be.cfg)
	out, devid := make([]byte, 0, 256), []byte("dev-000042")
	b.ReportAllocs()
	for b.Loop() {
		out, devid, _ = be.reply(out[:0], devid, req)
	}
}
