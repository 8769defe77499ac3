package registry

import (
	"context"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/devgate/devgate/internal/etcdserver"
)

// Waits are jittered within [d/2, d], double up to the cap, and two
// replicas (two sources) do not wait alike (issue 12: every replica hit etcd
// at once).
func TestJitterBackoffBounds(t *testing.T) {
	a := jitterBackoff{min: retryMin, max: retryMax, rnd: rand.New(rand.NewPCG(1, 1))}
	b := jitterBackoff{min: retryMin, max: retryMax, rnd: rand.New(rand.NewPCG(2, 2))}
	d, same := retryMin, 0
	for i := 0; i < 50; i++ {
		x, y := a.next(), b.next()
		for _, v := range []time.Duration{x, y} {
			if v < d/2 || v > d {
				t.Fatalf("step %d: wait %s outside [%s, %s]", i, v, d/2, d)
			}
		}
		if x == y {
			same++
		}
		d = min(2*d, retryMax)
	}
	if same > 5 {
		t.Fatalf("two replicas waited alike %d times of 50", same)
	}
	a.reset()
	if v := a.next(); v > retryMin {
		t.Fatalf("after reset: %s", v)
	}
	r := jitterBackoff{min: backoffMin, max: backoffMax}
	for i := 0; i < 20; i++ {
		if v := r.next(); v > time.Second {
			t.Fatalf("registration retry waits %s, more than a second", v)
		}
	}
}

// etcd not there at start: the watcher says what it waits for within the
// list timeout (not "watch interrupted" after 10s), keeps saying so, and
// gets its ring once etcd comes up.
func TestWaitingForEtcdAtStart(t *testing.T) {
	addr, err := etcdserver.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.InfoLevel)
	cli := clientAt(t, "http://"+addr)
	w := &Watcher{Client: cli, Keys: testKeys, Logger: zap.New(core), ListTimeout: 500 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	defer func() { cancel(); <-done }()

	start := time.Now()
	var first time.Duration
	for first == 0 && time.Since(start) < 20*time.Second {
		if logs.FilterMessage("waiting for etcd").Len() > 0 {
			first = time.Since(start)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if first == 0 {
		t.Fatalf("no \"waiting for etcd\" line in 20s; logged: %v", messages(logs))
	}
	if first > 5*time.Second {
		t.Fatalf("first \"waiting for etcd\" after %s: list timeout 500ms not honoured", first)
	}
	e := logs.FilterMessage("waiting for etcd").All()[0]
	f := e.ContextMap()
	eps, _ := f["endpoints"].([]interface{})
	if len(eps) != 1 || !strings.Contains(eps[0].(string), addr) || f["error"] == nil || f["retryIn"] == nil {
		t.Fatalf("waiting line does not say for what: %v", f)
	}
	if d, ok := f["retryIn"].(time.Duration); !ok || d > retryMax {
		t.Fatalf("retryIn %v", f["retryIn"])
	}
	if n := logs.FilterMessage("etcd watch interrupted; listing again").Len(); n != 0 {
		t.Fatalf("said the watch was interrupted %d times; there never was one", n)
	}
	t.Logf("first line after %s: %s %v", first.Round(time.Millisecond), e.Message, f)

	s, err := etcdserver.Start(etcdserver.Config{Dir: t.TempDir(), ClientAddr: addr, Quick: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	select {
	case <-w.Ready():
	case <-time.After(30 * time.Second):
		t.Fatal("no ring 30s after etcd came up")
	}
	st := w.Stats()
	if st.RelistReasons[ReasonStart] != 1 || st.Relists != 1 {
		t.Fatalf("stats after the first list: %+v", st)
	}
}

func messages(logs *observer.ObservedLogs) []string {
	var out []string
	for _, e := range logs.All() {
		out = append(out, e.Message)
	}
	return out
}
