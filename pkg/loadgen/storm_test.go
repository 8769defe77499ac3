package loadgen

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/devgate/devgate/pkg/demo"
)

// A backend that restarts drops every device; the devices log in again at
// once and AwaitStorm reports them all back, on real sockets.
func TestStormBackendRestart(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	b1 := &demo.Backend{ID: "b1"}
	go b1.Serve(l)
	const n = 40
	r, err := Run(context.Background(), Config{Mode: Storm, Targets: []string{addr}, Devices: n, Concurrency: 8,
		Sources: 4, SourceBase: 98, Timeout: 5 * time.Second, StormWait: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Release()
	if r.Ok != n || r.Failed != 0 {
		t.Fatalf("held %d failed %d, want %d and 0: %v", r.Ok, r.Failed, n, r.Errors)
	}

	// The restart: every connection closed, the port served again by a
	// new backend (attempts in the gap are refused and retried).
	b1.Close()
	var l2 net.Listener
	for range 100 {
		if l2, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	b2 := &demo.Backend{ID: "b2"}
	go b2.Serve(l2)
	defer b2.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st := r.AwaitStorm(ctx)
	t.Logf("%+v", st)
	if st.Held != n || st.Dropped != n || st.Back != n {
		t.Fatalf("held %d dropped %d back %d, want %d each", st.Held, st.Dropped, st.Back, n)
	}
	if got := b2.Stats().Logins; got != n {
		t.Errorf("restarted backend took %d logins, want %d", got, n)
	}
	if st.FirstDropNs == 0 || st.LastBackNs < st.FirstDropNs || st.MaxMs < st.P50ms || st.Seconds <= 0 {
		t.Errorf("times: %+v", st)
	}
	r.Release() // closes the re-dialled connections and stops the watchers
	deadline := time.Now().Add(10 * time.Second)
	for b2.Stats().Active != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if a := b2.Stats().Active; a != 0 {
		t.Errorf("%d connections open after Release", a)
	}
}

// A backend that does not come back: AwaitStorm gives up StormWait after
// the first drop and counts the failed attempts.
func TestStormGivesUp(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &demo.Backend{ID: "b1"}
	go b.Serve(l)
	const n = 5
	r, err := Run(context.Background(), Config{Mode: Storm, Targets: []string{l.Addr().String()}, Devices: n,
		Timeout: time.Second, StormWait: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Release()
	b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st := r.AwaitStorm(ctx)
	if st.Dropped != n || st.Back != 0 || st.FailedDevs != n || st.FailedTries < n || len(st.Errors) == 0 || st.Seconds < 0.3 {
		t.Errorf("%+v", st)
	}
	if ctx.Err() != nil {
		t.Error("AwaitStorm waited for ctx, not StormWait")
	}
}
