package proxy

import (
	"net"
	"testing"
	"time"
)

const reasonNotJSON Reason = "not_json" // frame.Reason, counted as the proxy's

// The cap counts lines per reason within a second; what it drops is
// counted and summed up in one line with the next error after that second.
func TestAccessErrorCap(t *testing.T) {
	acc, buf := newAccess(AccessErrors, 0)
	acc.ErrorsPerSecond = 3
	t0 := time.Unix(1_800_000_000, 0)
	var kept int
	for range 5 {
		if acc.allowError(reasonNotJSON, t0) {
			kept++
		}
	}
	if !acc.allowError(ReasonDialFailed, t0.Add(500*time.Millisecond)) {
		t.Fatal("another reason's first line in the same second was dropped")
	}
	if kept != 3 {
		t.Fatalf("kept %d of 5 lines with a cap of 3", kept)
	}
	if ls := buf.lines(t); len(ls) != 0 {
		t.Fatalf("summed up before the second ended: %v", ls)
	}
	if !acc.allowError(reasonNotJSON, t0.Add(time.Second)) {
		t.Fatal("the cap did not start again in the next second")
	}
	ls := buf.lines(t)
	if len(ls) != 1 || ls[0]["msg"] != suppressedLine || ls[0]["reason"] != string(reasonNotJSON) ||
		ls[0]["lines"] != 2.0 || ls[0]["perSecond"] != 3.0 || ls[0]["gateway"] != "gw-test" {
		t.Fatalf("summary %v: want one line, reason not_json, lines 2, perSecond 3", ls)
	}
	if s := acc.Suppressed(); len(s) != 1 || s[reasonNotJSON] != 2 {
		t.Fatalf("suppressed %v, want not_json 2", s)
	}

	acc.ErrorsPerSecond = -1
	for range 10 {
		if !acc.allowError(reasonNotJSON, t0.Add(2*time.Second)) {
			t.Fatal("a line dropped with no cap")
		}
	}
}

// A flood of bad first frames through the proxy: every refusal is counted,
// and each one is either written or counted as suppressed.
func TestAccessErrorCapFlood(t *testing.T) {
	bothPaths(t, func(t *testing.T) {
		acc, buf := newAccess(AccessErrors, 0)
		acc.ErrorsPerSecond = 2
		c := newCluster(t, 1, func(p *Proxy) { p.Access = acc })
		const n = 30
		for range n {
			conn, err := net.Dial("tcp", c.addr)
			if err != nil {
				t.Fatal(err)
			}
			conn.Write(mkframe(1, "not json"))
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			conn.Read(make([]byte, 1))
			conn.Close()
		}
		waitFor(t, "all refused", func() bool { return c.proxy.Stats().Closed[reasonNotJSON] == n })
		lines := 0
		for _, l := range buf.lines(t) {
			if l["msg"] == accessMsg && l["reason"] == string(reasonNotJSON) {
				lines++
			}
		}
		if sup := c.proxy.AccessSuppressed()[reasonNotJSON]; lines+int(sup) != n || sup == 0 {
			t.Fatalf("%d lines written and %d suppressed of %d refusals", lines, sup, n)
		}
	})
}
