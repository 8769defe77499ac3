package sim

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	c := HoldConfig{BackoffMin: 100 * time.Millisecond, BackoffMax: time.Second}.withDefaults()
	for fails, d := range []time.Duration{100, 200, 400, 800, 1000, 1000} {
		d *= time.Millisecond
		seen := map[time.Duration]bool{}
		for range 50 {
			w := c.backoff(fails)
			if w < d/2 || w >= d {
				t.Fatalf("backoff(%d) = %v, want [%v, %v)", fails, w, d/2, d)
			}
			seen[w] = true
		}
		if len(seen) < 10 {
			t.Errorf("backoff(%d): %d distinct waits in 50", fails, len(seen))
		}
	}
	if w := c.backoff(1000); w < c.BackoffMax/2 || w >= c.BackoffMax {
		t.Errorf("backoff(1000) = %v: not bounded by BackoffMax", w)
	}
	if c := (HoldConfig{}).withDefaults(); c.BackoffMin != DefaultBackoffMin || c.BackoffMax != DefaultBackoffMax ||
		c.Interval != DefaultHoldInterval {
		t.Errorf("defaults %v %v %v", c.BackoffMin, c.BackoffMax, c.Interval)
	}
}

// TestHoldRefused: against a closed port every attempt fails and the waits
// between them grow to BackoffMax; nothing is counted as connected.
func TestHoldRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()

	var mu sync.Mutex
	var waits []time.Duration
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	st, err := Hold(ctx, HoldConfig{
		Config:     Config{Target: addr, Devices: 1},
		BackoffMin: 20 * time.Millisecond, BackoffMax: 160 * time.Millisecond,
		OnEvent: func(e Event) {
			if e.Kind == EventFailed {
				mu.Lock()
				waits = append(waits, e.Wait)
				mu.Unlock()
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if st.Connected != 0 || st.Logins != 0 || st.Errors["dial_refused"] < 5 {
		t.Fatalf("status:\n%s", st)
	}
	mu.Lock()
	defer mu.Unlock()
	// 0 before the first attempt, then [10,20), [20,40), [40,80), [80,160), [80,160) ...
	for i, w := range waits {
		if i == 0 {
			if w != 0 {
				t.Errorf("first attempt waited %v", w)
			}
			continue
		}
		d := min(20*time.Millisecond<<(i-1), 160*time.Millisecond)
		if w < d/2 || w >= d {
			t.Errorf("attempt %d waited %v, want [%v, %v)", i, w, d/2, d)
		}
	}
	if !strings.Contains(st.Line(), "connected 0/1") || !strings.Contains(st.Line(), "failed-attempts") {
		t.Errorf("Line() = %s", st.Line())
	}
}

// TestHoldHeartbeats: a frame that arrives in pieces across read deadlines
// still reads as one; a server that stops echoing is left after Timeout.
func TestHoldHeartbeats(t *testing.T) {
	var mu sync.Mutex
	hbs := map[int]int{} // connection -> heartbeats received
	addr := fakeServer(t, func(n int, typ byte, body []byte) []byte {
		if typ == TypeLogin {
			return AppendFrame(nil, typ, 1, 0, []byte(`{"backend":"b"}`))
		}
		mu.Lock()
		hbs[n]++
		k := hbs[n]
		mu.Unlock()
		if k > 3 {
			return nil // stops echoing: the device must give up on it
		}
		return AppendFrame(nil, typ, 1, 0, body)
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h, err := NewHolder(HoldConfig{
		Config:     Config{Target: addr, Devices: 1, Interval: 30 * time.Millisecond, Timeout: 200 * time.Millisecond},
		BackoffMin: 10 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ran := make(chan HoldStatus, 1)
	go func() { ran <- h.Run(ctx) }()
	deadline := time.Now().Add(20 * time.Second)
	for h.Status().Drops["heartbeat_timeout"] < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("no heartbeat timeouts:\n%s", h.Status())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	st := <-ran
	if st.Reconnects < 1 || st.Moved != 0 || len(st.Errors) != 0 {
		t.Fatalf("status:\n%s", st)
	}
}

// TestFrameReaderSplit feeds a frame in pieces with read deadlines firing
// in between.
func TestFrameReaderSplit(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	f := AppendFrame(nil, TypeHeartbeat, 1, 0, []byte(strings.Repeat("x", 1000)))
	go func() {
		for _, part := range [][]byte{f[:3], f[3:7], f[7:500], f[500:]} {
			b.Write(part)
			time.Sleep(30 * time.Millisecond)
		}
	}()
	var r frameReader
	timeouts := 0
	for {
		a.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
		typ, body, err := r.next(a)
		if err == nil {
			if typ != TypeHeartbeat || len(body) != 1000 {
				t.Fatalf("frame type %d, %d bytes", typ, len(body))
			}
			break
		}
		if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
			t.Fatal(err)
		}
		if timeouts++; timeouts > 1000 {
			t.Fatal("frame never completed")
		}
	}
	if timeouts == 0 {
		t.Error("no deadline fired mid-frame: the test proved nothing")
	}
}
