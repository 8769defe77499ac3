package sim

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"
)

// runCheckUntil runs a Checker until its devices sent sent heartbeats in
// all (bounded by 20 s), then stops it and returns the report.
func runCheckUntil(t *testing.T, cfg CheckConfig, sent int64) CheckReport {
	t.Helper()
	c, err := NewChecker(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan CheckReport, 1)
	go func() { done <- c.Run(ctx) }()
	for deadline := time.Now().Add(20 * time.Second); c.Status().Sent < sent; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("sent %d heartbeats of %d in 20 s: %+v", c.Status().Sent, sent, <-done)
		}
	}
	cancel()
	return <-done
}

// hbAnswer is one answer frame to a numbered heartbeat.
func hbAnswer(typ byte, backend, devid string, seq int64) []byte {
	return AppendFrame(nil, typ, 1, 0, fmt.Appendf(nil, `{"backend":%q,"devid":%q,"seq":%d}`, backend, devid, seq))
}

// TestCheckCounts makes a fake backend misbehave in one way per case; the
// report must count exactly that, so every check can fail.
func TestCheckCounts(t *testing.T) {
	const id = "dev-000000"
	for _, tc := range []struct {
		name string
		// answer is what the backend sends for heartbeat seq (n: connection number).
		answer func(n int, seq int64) []byte
		check  func(r CheckReport) bool
	}{
		{"clean", func(_ int, s int64) []byte { return hbAnswer(TypeHeartbeat, "A", id, s) },
			func(r CheckReport) bool { return r.Clean && r.Switches == 0 && r.InFlight == 0 && r.Answered == r.Sent }},
		{"move", func(_ int, s int64) []byte {
			return hbAnswer(TypeHeartbeat, map[bool]string{true: "A", false: "B"}[s < 5], id, s)
		},
			func(r CheckReport) bool {
				return r.Clean && r.Switches == 1 && r.Moves["A>B"] == 1 && r.PauseMax > 0 && r.PauseP50 == r.PauseMax &&
					r.PerBackend["B"] == 1 && r.PerBackend["A"] == 0
			}},
		{"stale", func(_ int, s int64) []byte {
			b := "B"
			if s < 5 || s == 7 {
				b = "A"
			}
			return hbAnswer(TypeHeartbeat, b, id, s)
		}, func(r CheckReport) bool { return !r.Clean && r.StaleAnswers == 1 && r.Switches == 1 }},
		{"no login on the new backend", func(_ int, s int64) []byte {
			if s < 5 {
				return hbAnswer(TypeHeartbeat, "A", id, s)
			}
			return hbAnswer(TypeHeartbeat, "B", "", s)
		}, func(r CheckReport) bool { return !r.Clean && r.DevidEmpty == r.Answered-4 && r.Switches == 1 }},
		{"wrong devid", func(_ int, s int64) []byte {
			if s == 3 {
				return hbAnswer(TypeHeartbeat, "A", "dev-000009", s)
			}
			return hbAnswer(TypeHeartbeat, "A", id, s)
		}, func(r CheckReport) bool { return !r.Clean && r.DevidWrong == 1 && r.DevidEmpty == 0 }},
		{"missing", func(_ int, s int64) []byte {
			if s == 3 {
				return nil
			}
			return hbAnswer(TypeHeartbeat, "A", id, s)
		}, func(r CheckReport) bool {
			return !r.Clean && r.Missing == 1 && r.Answered == r.Sent-1 && r.InFlight == 0
		}},
		{"duplicate", func(_ int, s int64) []byte {
			a := hbAnswer(TypeHeartbeat, "A", id, s)
			if s == 3 {
				a = append(a, a...)
			}
			return a
		}, func(r CheckReport) bool { return !r.Clean && r.Duplicate == 1 && r.Missing == 0 }},
		{"out of order", func(_ int, s int64) []byte {
			switch s {
			case 3:
				return nil
			case 4:
				return append(hbAnswer(TypeHeartbeat, "A", id, 4), hbAnswer(TypeHeartbeat, "A", id, 3)...)
			}
			return hbAnswer(TypeHeartbeat, "A", id, s)
		}, func(r CheckReport) bool {
			return !r.Clean && r.OutOfOrder == 1 && r.Missing == 0 && r.Duplicate == 0 && r.Answered == r.Sent
		}},
		{"extra login answer", func(_ int, s int64) []byte {
			a := hbAnswer(TypeHeartbeat, "A", id, s)
			if s == 3 {
				a = append(AppendFrame(nil, TypeLogin, 1, 0, []byte(`{"backend":"A","devid":"`+id+`"}`)), a...)
			}
			return a
		}, func(r CheckReport) bool { return !r.Clean && r.ExtraFrames == 1 && r.Answered == r.Sent }},
		{"never sent", func(_ int, s int64) []byte {
			a := hbAnswer(TypeHeartbeat, "A", id, s)
			if s == 3 {
				a = append(a, hbAnswer(TypeHeartbeat, "A", id, 1_000_000)...)
			}
			return a
		}, func(r CheckReport) bool { return !r.Clean && r.BadAnswers == 1 && r.Missing == 0 }},
		{"unparsable", func(_ int, s int64) []byte {
			if s == 3 {
				return AppendFrame(nil, TypeHeartbeat, 1, 0, []byte(`{"seq":3}`)) // an echo: no backend
			}
			return hbAnswer(TypeHeartbeat, "A", id, s)
		}, func(r CheckReport) bool { return !r.Clean && r.BadAnswers == 1 && r.Missing == 1 }},
		{"silent at the end", func(_ int, s int64) []byte {
			if s > 5 {
				return nil
			}
			return hbAnswer(TypeHeartbeat, "A", id, s)
		}, func(r CheckReport) bool {
			return !r.Clean && r.InFlight == 1 && r.Answered == 5 && r.Missing == r.Sent-6 && r.Disconnects == 0
		}},
		{"disconnect", func(n int, s int64) []byte {
			if n == 0 && s == 4 {
				return hangUp
			}
			return hbAnswer(TypeHeartbeat, "A", id, s)
		}, func(r CheckReport) bool {
			return !r.Clean && r.Disconnects == 1 && r.DisconnectReasons["conn_closed"] == 1 && r.Reconnects == 1 &&
				r.Logins == 2 && r.Missing == 1 && r.Switches == 0 && r.Connected == 1
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := fakeServer(t, func(n int, typ byte, body []byte) []byte {
				if typ == TypeLogin {
					return AppendFrame(nil, TypeLogin, 1, 0, []byte(`{"backend":"A","devid":"`+id+`"}`))
				}
				var hb struct{ Seq int64 }
				if json.Unmarshal(body, &hb) != nil {
					return hangUp
				}
				return tc.answer(n, hb.Seq)
			})
			r := runCheckUntil(t, CheckConfig{Config: Config{Target: addr, Devices: 1, Interval: 5 * time.Millisecond,
				Timeout: 500 * time.Millisecond}, BackoffMin: 10 * time.Millisecond}, 12)
			if !tc.check(r) {
				t.Fatalf("report:\n%s%+v", r, r)
			}
			t.Logf("%v", r.Problems())
		})
	}
}

func TestPauseSample(t *testing.T) {
	var p pauseSample
	if p.quantile(0.5) != 0 {
		t.Fatal("empty sample")
	}
	for i := 1; i <= 100; i++ {
		p.add(time.Duration(i))
	}
	if p.quantile(0.5) != 50 || p.quantile(0.99) != 99 || p.max != 100 {
		t.Fatalf("p50 %v p99 %v max %v", p.quantile(0.5), p.quantile(0.99), p.max)
	}
	for range 3 * maxPauseSamples {
		p.add(time.Millisecond)
	}
	if len(p.d) != maxPauseSamples || p.max != time.Millisecond || p.quantile(0.5) != time.Millisecond {
		t.Fatalf("after many: %d samples, max %v, p50 %v", len(p.d), p.max, p.quantile(0.5))
	}
}

func TestCheckBadConfig(t *testing.T) {
	for _, cfg := range []CheckConfig{
		{},
		{Config: Config{Target: "x:1"}},
		{Config: Config{Target: "x:1", Devices: 1}, BackoffMin: -1},
	} {
		if _, err := NewChecker(cfg); err == nil {
			t.Errorf("%+v: no error", cfg)
		}
	}
}

func TestBumpBounded(t *testing.T) {
	m := map[string]int{}
	for i := range 3 * maxNames {
		bump(m, fmt.Sprint(i), 1)
	}
	bump(m, "0", 1)
	if len(m) != maxNames+1 || m[otherName] != 2*maxNames || m["0"] != 2 {
		t.Fatalf("%d keys, other %d, m[0] %d", len(m), m[otherName], m["0"])
	}
}
