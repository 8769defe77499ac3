package main

import (
	"testing"
	"time"

	"github.com/devgate/devgate/pkg/config"
	"github.com/devgate/devgate/pkg/proxy"
)

// The rehome section reaches the proxy: swallowReply is KeepReply's
// opposite, replyFrame defaults to frame.
func TestRehomeOptions(t *testing.T) {
	const base = "backends: [{id: b1, addr: '127.0.0.1:9101'}]\nframe: {maxFrameLength: 2048}\n"
	for _, tc := range []struct {
		doc  string
		want func(proxy.Rehome) bool
	}{
		{"", func(r proxy.Rehome) bool {
			return !r.Enabled && !r.KeepReply && r.Timeout == 5*time.Second && r.MaxBuffered == 64<<10 &&
				r.DrainGrace == time.Second && r.ReplyFrame.MaxFrameLength == 2048
		}},
		{"rehome: {enabled: true, swallowReply: false, timeout: 2s, drainGrace: 100ms, maxBuffered: 4096, replyFrame: {maxFrameLength: 9000}}",
			func(r proxy.Rehome) bool {
				return r.Enabled && r.KeepReply && r.Timeout == 2*time.Second && r.MaxBuffered == 4096 &&
					r.DrainGrace == 100*time.Millisecond && r.ReplyFrame.MaxFrameLength == 9000
			}},
	} {
		cfg, err := config.Parse([]byte(base + tc.doc + "\n"))
		if err != nil {
			t.Fatal(err)
		}
		p, err := newProxy(cfg, proxy.NewAtomicRing(nil), nil)
		if err != nil {
			t.Fatal(err)
		}
		if !tc.want(p.Rehome) {
			t.Errorf("%q: proxy.Rehome %+v", tc.doc, p.Rehome)
		}
	}
}
