package config

import (
	"strings"
	"testing"
	"time"
)

func TestRehomeDefaults(t *testing.T) {
	c, err := Parse([]byte(oneBackend))
	if err != nil {
		t.Fatal(err)
	}
	r := c.Rehome
	if r.On() || !r.SwallowOn() || r.TimeoutOr() != 5*time.Second || r.DrainGraceOr() != time.Second || r.MaxBufferedOr() != 64<<10 {
		t.Fatalf("defaults: on %v swallow %v timeout %v grace %v buffered %d", r.On(), r.SwallowOn(), r.TimeoutOr(), r.DrainGraceOr(), r.MaxBufferedOr())
	}
	rf, err := c.ReplyFrameConfig()
	if err != nil {
		t.Fatal(err)
	}
	if df, _ := c.Frame.FrameConfig(); rf != df {
		t.Fatalf("reply frame %+v, want the device's %+v", rf, df)
	}
	if c.Rebalance.AutoOn() || c.Rebalance.PerSecondOr() != DefaultRebalancePerSecond {
		t.Fatalf("rebalance defaults: auto %v pace %v", c.Rebalance.AutoOn(), c.Rebalance.PerSecondOr())
	}
}

func TestRehomeSet(t *testing.T) {
	c, err := Parse([]byte(oneBackend + `rehome:
  enabled: true
  timeout: 3s
  maxBuffered: 8192
  swallowReply: false
  drainGrace: 500ms
  replyFrame: {lengthFieldOffset: 2, lengthFieldLength: 4, headerLength: 8, maxFrameLength: 65536}
rebalance: {auto: true, perSecond: 200}
`))
	if err != nil {
		t.Fatal(err)
	}
	r := c.Rehome
	if !r.On() || r.SwallowOn() || r.TimeoutOr() != 3*time.Second || r.DrainGraceOr() != 500*time.Millisecond || r.MaxBufferedOr() != 8192 {
		t.Fatalf("got on %v swallow %v timeout %v grace %v buffered %d", r.On(), r.SwallowOn(), r.TimeoutOr(), r.DrainGraceOr(), r.MaxBufferedOr())
	}
	rf, err := c.ReplyFrameConfig()
	if err != nil {
		t.Fatal(err)
	}
	if rf.LengthFieldOffset != 2 || rf.LengthFieldLength != 4 || rf.HeaderLength != 8 || rf.MaxFrameLength != 65536 {
		t.Fatalf("reply frame %+v", rf)
	}
	if !c.Rebalance.AutoOn() || c.Rebalance.PerSecondOr() != 200 {
		t.Fatalf("rebalance: auto %v pace %v", c.Rebalance.AutoOn(), c.Rebalance.PerSecondOr())
	}
}

// Each bad value is refused with the key and what is wrong.
func TestRehomeRefused(t *testing.T) {
	for _, tc := range []struct{ doc, want string }{
		{"rehome: {timeout: -1s}", "negative duration -1s"},
		{"rehome: {drainGrace: -5ms}", "negative duration -5ms"},
		{"rehome: {timeout: 1s}", "rehome.drainGrace 1s must be shorter than rehome.timeout 1s"},
		{"rehome: {timeout: 2s, drainGrace: 3s}", "rehome.drainGrace 3s must be shorter than rehome.timeout 2s"},
		{"rehome: {maxBuffered: -1}", "rehome.maxBuffered -1: want 0 (default 65536) up to 67108864 bytes"},
		{"rehome: {maxBuffered: 1000000000}", "rehome.maxBuffered 1000000000: want 0"},
		{"rehome: {maxBuffered: 1024}", "rehome.maxBuffered 1024 is less than frame.maxFrameLength 4096"},
		{"rehome: {replyFrame: {lengthFieldLength: 3}}", "rehome.replyFrame: "},
		{"rehome: {replyFrame: {byteOrder: middle}}", `rehome.replyFrame.byteOrder "middle": want big or little`},
		{"rehome: {replyFrame: {maxFramLength: 9}}", `unknown field "maxFramLength" in rehome.replyFrame (did you mean "maxFrameLength"?)`},
		{"rehome: {enabled: maybe}", "cannot unmarshal"},
		{"rehome: {swallowReplies: true}", `unknown field "swallowReplies" in rehome (did you mean "swallowReply"?)`},
		{"rebalance: {perSecond: -1}", "rebalance.perSecond -1: want 0 (default 50) up to 1e+06"},
		{"rebalance: {perSecond: 2e6}", "rebalance.perSecond 2e+06"},
		{"rebalance: {autom: true}", `unknown field "autom" in rebalance (did you mean "auto"?)`},
	} {
		_, err := Parse([]byte(oneBackend + tc.doc + "\n"))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.doc, err, tc.want)
		}
	}
}
