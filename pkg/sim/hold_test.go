package sim_test

import (
	"context"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/devgate/devgate/internal/testkit"
	"github.com/devgate/devgate/pkg/proxy"
	"github.com/devgate/devgate/pkg/ring"
	"github.com/devgate/devgate/pkg/sim"
)

// events records a Holder's events and the backend each device is on.
type events struct {
	mu    sync.Mutex
	all   []sim.Event
	where map[int]string // device -> backend now ("" while disconnected)
}

func (e *events) add(ev sim.Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.all = append(e.all, ev)
	switch ev.Kind {
	case sim.EventLogin:
		e.where[ev.Device] = ev.Backend
	case sim.EventDown:
		e.where[ev.Device] = ""
	}
}

func (e *events) snapshot() ([]sim.Event, map[int]string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	where := make(map[int]string, len(e.where))
	for k, v := range e.where {
		where[k] = v
	}
	return append([]sim.Event(nil), e.all...), where
}

// waitUntil polls cond every 20 ms for up to 20 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testkit.WaitFor(t, 20*time.Second, 20*time.Millisecond, what, cond)
}

// TestHoldEvictions runs hold mode through a real gateway (pkg/proxy on
// a ring it swaps) in front of demo backends: evicted devices come back
// after a jittered backoff, each on its ring owner, and only they move.
func TestHoldEvictions(t *testing.T) {
	var bs []ring.Backend
	for _, id := range []string{"b1", "b2", "b3"} {
		_, addr := backend(t, id)
		bs = append(bs, ring.Backend{ID: id, Addr: addr})
	}
	mkRing := func(bs []ring.Backend) ring.Ring {
		r, err := ring.New(ring.ModeConsistent, bs)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	src := proxy.NewAtomicRing(mkRing(bs[:2])) // b3 joins later: a scale-out
	p := &proxy.Proxy{Source: src, MaxConnsPerIP: -1, AcceptRatePerIP: -1}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- p.Serve(l) }()
	t.Cleanup(func() {
		p.Close()
		if err := <-served; err != proxy.ErrServerClosed {
			t.Errorf("Serve: %v", err)
		}
	})

	const devices = 200
	backoff := 400 * time.Millisecond
	ev := &events{where: map[int]string{}}
	cfg := sim.HoldConfig{
		Config:     sim.Config{Target: l.Addr().String(), Devices: devices, Interval: 200 * time.Millisecond},
		BackoffMin: backoff, BackoffMax: 4 * backoff,
		OnEvent: ev.add,
	}
	h, err := sim.NewHolder(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan sim.HoldStatus, 1)
	go func() { ran <- h.Run(ctx) }()
	defer func() { cancel(); <-ran }()

	// onOwners says whether every device is logged in on its owner in r.
	onOwners := func(r ring.Ring) bool {
		_, where := ev.snapshot()
		if len(where) != devices {
			return false
		}
		for i, b := range where {
			if b != r.Backends()[r.Lookup([]byte(cfg.DeviceID(i)))].ID {
				return false
			}
		}
		return true
	}
	waitUntil(t, "every device on its owner in b1+b2", func() bool { return onOwners(src.Ring()) })
	if st := h.Status(); st.Connected != devices || st.Reconnects != 0 || st.PerBackend["b3"] != 0 {
		t.Fatalf("after the ramp:\n%s", st)
	}

	// Scale out, then evict the devices the new ring gives to b3.
	src.Store(mkRing(bs))
	evictedAt := time.Now()
	n := p.EvictMisplaced(0, "rebalance")
	if n == 0 || n == devices {
		t.Fatalf("EvictMisplaced closed %d of %d", n, devices)
	}
	waitUntil(t, "every device on its owner in b1+b2+b3", func() bool { return onOwners(src.Ring()) })

	st := h.Status()
	if st.Connected != devices || st.Reconnects != n || st.Moved != n || st.PerBackend["b3"] != n {
		t.Fatalf("%d evicted; status:\n%s", n, st)
	}
	if st.Moves["b1>b3"]+st.Moves["b2>b3"] != n || st.Drops["conn_closed"]+st.Drops["conn_reset"] != n {
		t.Fatalf("%d evicted; moves %v drops %v", n, st.Moves, st.Drops)
	}
	all, _ := ev.snapshot()
	waits := map[time.Duration]bool{}
	for _, e := range all {
		if e.Kind != sim.EventLogin || e.Prev == "" {
			continue
		}
		// The first wait after a good connection is drawn from
		// [BackoffMin/2, BackoffMin); the device logs in no sooner.
		if e.Wait < backoff/2 || e.Wait >= backoff {
			t.Errorf("device %d waited %v, want [%v, %v)", e.Device, e.Wait, backoff/2, backoff)
		}
		if d := e.Time.Sub(evictedAt); d < e.Wait {
			t.Errorf("device %d back %v after the eviction, before its %v backoff", e.Device, d, e.Wait)
		}
		waits[e.Wait] = true
	}
	if len(waits) < n/2 {
		t.Errorf("%d reconnects drew only %d distinct waits: not jittered", n, len(waits))
	}

	// A drain of b1 (out of the ring, then evicted): its devices land on
	// their owners among b2 and b3.
	onB1, b1b3 := st.PerBackend["b1"], st.Moves["b1>b3"]
	src.Store(mkRing(bs[1:]))
	if got := p.Evict("b1", 0, "drain"); got != onB1 {
		t.Fatalf("Evict b1 closed %d, want %d", got, onB1)
	}
	waitUntil(t, "every device on its owner in b2+b3", func() bool { return onOwners(src.Ring()) })
	st = h.Status()
	if st.PerBackend["b1"] != 0 || st.Moved != n+onB1 || st.Moves["b1>b2"]+st.Moves["b1>b3"]-b1b3 != onB1 {
		t.Fatalf("after draining b1 (%d devices):\n%s", onB1, st)
	}
	for _, want := range []string{"b1 0 ", "moved " + strconv.Itoa(n+onB1), "connected 200/200"} {
		if !strings.Contains(st.Line(), want) {
			t.Errorf("Line() lacks %q: %s", want, st.Line())
		}
	}

	cancel()
	final := <-ran
	ran <- final // for the deferred receive
	if final.Connected != devices || final.Moved != n+onB1 {
		t.Fatalf("final status:\n%s", final)
	}
}
