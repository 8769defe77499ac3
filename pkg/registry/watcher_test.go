package registry

import (
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/devgate/devgate/internal/etcdserver"
	"github.com/devgate/devgate/internal/faultproxy"
)

var testKeys = Keys{Prefix: "/devgate-test", Cluster: "c1"}

func newWatcher(cli *clientv3.Client) *Watcher {
	return &Watcher{Client: cli, Keys: testKeys, Settle: 20 * time.Millisecond,
		ProgressInterval: 300 * time.Millisecond, PanicHold: 2 * time.Second}
}

func TestJoinAndLeaveWithinOneSecond(t *testing.T) {
	s := etcdserver.StartT(t)
	cli := etcdserver.ClientT(t, s)
	// Four stay, so the leaves below stay under the panic threshold.
	for _, id := range []string{"b1", "s1", "s2", "s3"} {
		putBackend(t, cli, testKeys, id, "127.0.0.1:9101", 0, 0)
	}
	w1, w2 := newWatcher(cli), newWatcher(etcdserver.ClientT(t, s))
	startWatcher(t, w1)
	startWatcher(t, w2)

	lease, err := cli.Grant(ctxT(t), 5)
	if err != nil {
		t.Fatal(err)
	}
	putBackend(t, cli, testKeys, "b2", "127.0.0.1:9102", 0, lease.ID)
	for i, w := range []*Watcher{w1, w2} {
		d := waitSnap(t, w, time.Second, "join", func(s *Snapshot) bool { return inRing(s, "b2") })
		t.Logf("gateway %d: join visible after %s", i+1, d)
	}
	if _, err := cli.Delete(ctxT(t), testKeys.Backend("b2")); err != nil {
		t.Fatal(err)
	}
	for i, w := range []*Watcher{w1, w2} {
		d := waitSnap(t, w, time.Second, "leave", func(s *Snapshot) bool { return !inRing(s, "b2") && inRing(s, "b1") })
		t.Logf("gateway %d: leave visible after %s", i+1, d)
	}
	// Lease expiry is a leave too: b3's lease is revoked, as etcd does at TTL.
	lease3, _ := cli.Grant(ctxT(t), 5)
	putBackend(t, cli, testKeys, "b3", "127.0.0.1:9103", 0, lease3.ID)
	waitSnap(t, w1, time.Second, "b3 join", func(s *Snapshot) bool { return inRing(s, "b3") })
	if _, err := cli.Revoke(ctxT(t), lease3.ID); err != nil {
		t.Fatal(err)
	}
	waitSnap(t, w1, time.Second, "b3 lease gone", func(s *Snapshot) bool { return !inRing(s, "b3") })
}

// Two gateways built from the same etcd state route every key alike.
func TestTwoGatewaysAnswerIdentically(t *testing.T) {
	s := etcdserver.StartT(t)
	cli := etcdserver.ClientT(t, s)
	rng := rand.New(rand.NewPCG(1, 2))
	// Written in a shuffled order, so insertion order cannot matter.
	for _, i := range rng.Perm(20) {
		putBackend(t, cli, testKeys, fmt.Sprintf("netty-%02d", i), fmt.Sprintf("10.0.0.%d:9000", i+1), uint32(50+10*i), 0)
	}
	w1, w2 := newWatcher(cli), newWatcher(etcdserver.ClientT(t, s))
	startWatcher(t, w1)
	startWatcher(t, w2)
	s1, s2 := w1.Snapshot(), w2.Snapshot()
	if s1.Revision != s2.Revision || s1.Ring.Len() != 20 {
		t.Fatalf("revisions %d/%d, ring size %d", s1.Revision, s2.Revision, s1.Ring.Len())
	}
	b1, b2 := s1.Ring.Backends(), s2.Ring.Backends()
	key := make([]byte, 0, 32)
	var o1, o2 []int
	for i := 0; i < 100000; i++ {
		key = fmt.Appendf(key[:0], "dev-%08x", rng.Uint32())
		if b1[s1.Ring.Lookup(key)].ID != b2[s2.Ring.Lookup(key)].ID {
			t.Fatalf("key %s: gateways disagree", key)
		}
		if i%100 == 0 {
			o1, o2 = s1.Ring.Owners(key, 3, o1[:0]), s2.Ring.Owners(key, 3, o2[:0])
			for j := range o1 {
				if b1[o1[j]].ID != b2[o2[j]].ID {
					t.Fatalf("key %s: fallback order differs", key)
				}
			}
		}
	}
}

// A watch that fell behind a compaction lists again and converges.
func TestCompactionWhileBehind(t *testing.T) {
	s := etcdserver.StartT(t)
	cli := etcdserver.ClientT(t, s)
	putBackend(t, cli, testKeys, "b1", "127.0.0.1:9101", 0, 0)
	putBackend(t, cli, testKeys, "b2", "127.0.0.1:9102", 0, 0)
	cut := faultproxy.Start(t, s.ClientAddr())
	w := newWatcher(clientAt(t, "http://"+cut.Addr()))
	startWatcher(t, w)
	relists := w.Stats().Relists

	cut.Cut()
	putBackend(t, cli, testKeys, "b3", "127.0.0.1:9103", 0, 0)
	if _, err := cli.Delete(ctxT(t), testKeys.Backend("b1")); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ { // unrelated churn, then compact it all away
		if _, err := cli.Put(ctxT(t), "/other/key", fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	r, err := cli.Get(ctxT(t), "/other/key")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(ctxT(t), r.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	if got := w.Snapshot(); !inRing(got, "b1") || inRing(got, "b3") {
		t.Fatalf("cut-off watcher changed: %v", ids(got))
	}
	cut.Restore(t)
	d := waitSnap(t, w, 20*time.Second, "converge after compaction", func(s *Snapshot) bool {
		return !inRing(s, "b1") && inRing(s, "b2") && inRing(s, "b3") && s.Revision >= r.Header.Revision
	})
	t.Logf("converged %s after the path came back; relists %d -> %d", d, relists, w.Stats().Relists)
	if w.Stats().Relists <= relists {
		t.Fatal("converged without listing again")
	}
}

// etcd away: the gateway keeps its ring and says it is stale; when etcd is
// back, the watch resumes and changes flow again.
func TestEtcdStoppedKeepsRouting(t *testing.T) {
	outage := 30 * time.Second
	if testing.Short() || os.Getenv("DEVGATE_SHORT_OUTAGE") != "" {
		outage = 3 * time.Second
	}
	s := etcdserver.StartT(t)
	cli := etcdserver.ClientT(t, s)
	putBackend(t, cli, testKeys, "b1", "127.0.0.1:9101", 0, 0)
	putBackend(t, cli, testKeys, "b2", "127.0.0.1:9102", 0, 0)
	w := newWatcher(etcdserver.ClientT(t, s))
	startWatcher(t, w)
	before := w.Snapshot()

	s.Stop()
	deadline := time.Now().Add(outage)
	for time.Now().Before(deadline) {
		if r := w.Ring(); r == nil || r.Len() != 2 || w.Snapshot() != before {
			t.Fatalf("ring changed while etcd was away: %v", ids(w.Snapshot()))
		}
		time.Sleep(100 * time.Millisecond)
	}
	st := w.Stats()
	t.Logf("after %s without etcd: connected=%v staleness=%s", outage, st.Connected, st.Staleness.Round(time.Millisecond))
	if st.Connected || st.Staleness < outage-2*time.Second {
		t.Fatalf("stats do not show the outage: %+v", st)
	}
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	putBackend(t, cli, testKeys, "b3", "127.0.0.1:9103", 0, 0)
	d := waitSnap(t, w, 20*time.Second, "catch up", func(s *Snapshot) bool { return inRing(s, "b3") })
	t.Logf("caught up %s after etcd restarted", d)
	if st := w.Stats(); !st.Connected || st.Staleness > 5*time.Second {
		t.Fatalf("still stale after catching up: %+v", st)
	}
}

// etcd wiped and restored from a backup: the revision is lower and the
// cluster id new; the gateway rebuilds from the restored state.
func TestRestoredWithLowerRevision(t *testing.T) {
	a := etcdserver.StartT(t)
	cli := etcdserver.ClientT(t, a)
	putBackend(t, cli, testKeys, "b1", "127.0.0.1:9101", 0, 0)
	putBackend(t, cli, testKeys, "b2", "127.0.0.1:9102", 0, 0)
	for i := 0; i < 200; i++ {
		putBackend(t, cli, testKeys, "b3", "127.0.0.1:9103", uint32(1+i%50), 0)
	}
	w := newWatcher(clientAt(t, a.Endpoint()))
	startWatcher(t, w)
	high := w.Snapshot().Revision
	a.Stop()

	b, err := etcdserver.Start(etcdserver.Config{Dir: t.TempDir(), ClientAddr: a.ClientAddr(), Quick: true, ProgressNotifyInterval: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Stop)
	cb := clientAt(t, b.Endpoint())
	// The backup predates b3's weight changes and b4's arrival.
	putBackend(t, cb, testKeys, "b1", "127.0.0.1:9101", 0, 0)
	putBackend(t, cb, testKeys, "b2", "127.0.0.1:9102", 0, 0)
	putBackend(t, cb, testKeys, "b3", "127.0.0.1:9103", 7, 0)
	r, err := cb.Get(ctxT(t), "x")
	if err != nil {
		t.Fatal(err)
	}
	if r.Header.Revision >= high {
		t.Fatalf("restored revision %d not lower than %d", r.Header.Revision, high)
	}
	d := waitSnap(t, w, 30*time.Second, "converge on the restored etcd", func(s *Snapshot) bool {
		m, ok := s.Member("b3")
		return s.ClusterID == r.Header.ClusterId && ok && m.Weight == 7 && s.Revision >= r.Header.Revision && s.Revision < high
	})
	t.Logf("revision %d -> %d; converged in %s", high, w.Snapshot().Revision, d)
}

// Three of four backends vanish at once (one lease expiring): the panic
// threshold keeps them in the ring for the hold period, then lets go.
func TestPanicThresholdHoldsLeaseStorm(t *testing.T) {
	s := etcdserver.StartT(t)
	cli := etcdserver.ClientT(t, s)
	putBackend(t, cli, testKeys, "b0", "127.0.0.1:9100", 0, 0)
	lease, err := cli.Grant(ctxT(t), 2)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		putBackend(t, cli, testKeys, fmt.Sprintf("b%d", i), fmt.Sprintf("127.0.0.1:910%d", i), 0, lease.ID)
	}
	w := newWatcher(cli)
	startWatcher(t, w)
	if n := w.Ring().Len(); n != 4 {
		t.Fatalf("ring of %d", n)
	}
	// The lease is not kept alive: it expires, deleting three keys at once.
	waitSnap(t, w, 10*time.Second, "held", func(s *Snapshot) bool {
		held := 0
		for _, m := range s.Members {
			if m.State == StateHeld {
				held++
			}
		}
		return held == 3 && s.Ring.Len() == 4
	})
	if got := w.Stats().PanicHolds; got != 1 {
		t.Fatalf("panic holds = %d", got)
	}
	d := waitSnap(t, w, 10*time.Second, "released", func(s *Snapshot) bool { return s.Ring.Len() == 1 && inRing(s, "b0") })
	t.Logf("held backends released %s after the hold began", d)

	// One of two leaving is not a panic (50% is not more than 50%)... one of
	// three is certainly not: it leaves at once.
	putBackend(t, cli, testKeys, "b5", "127.0.0.1:9105", 0, 0)
	putBackend(t, cli, testKeys, "b6", "127.0.0.1:9106", 0, 0)
	waitSnap(t, w, time.Second, "b5 b6 join", func(s *Snapshot) bool { return s.Ring.Len() == 3 })
	cli.Delete(ctxT(t), testKeys.Backend("b6"))
	waitSnap(t, w, time.Second, "b6 leaves", func(s *Snapshot) bool { return s.Ring.Len() == 2 && !inRing(s, "b6") })
}

func TestDrainsAndBadValues(t *testing.T) {
	s := etcdserver.StartT(t)
	cli := etcdserver.ClientT(t, s)
	putBackend(t, cli, testKeys, "b1", "127.0.0.1:9101", 0, 0)
	putBackend(t, cli, testKeys, "b2", "127.0.0.1:9102", 0, 0)
	bad := map[string]string{
		"bad-json":   `{"addr":`,
		"bad-addr":   `{"addr":"nohost"}`,
		"zero-addr":  `{"addr":"0.0.0.0:80"}`,
		"heavy":      `{"addr":"127.0.0.1:1","weight":99999}`,
		"huge":       `{"addr":"127.0.0.1:1","zone":"` + string(make([]byte, MaxValueSize)) + `"}`,
		"bad\x01id":  `{"addr":"127.0.0.1:1"}`,
		"nested/one": `{"addr":"127.0.0.1:1"}`,
	}
	for id, v := range bad {
		if _, err := cli.Put(ctxT(t), testKeys.Backend(id), v); err != nil {
			t.Fatal(err)
		}
	}
	w := newWatcher(cli)
	startWatcher(t, w)
	if got := w.Snapshot().Ring.Len(); got != 2 {
		t.Fatalf("ring has %d backends; bad values got in: %v", got, ids(w.Snapshot()))
	}
	if got := w.Stats().BadValues; got != uint64(len(bad)) {
		t.Fatalf("bad values counted %d, want %d", got, len(bad))
	}
	if _, err := cli.Put(ctxT(t), testKeys.Drain("b1"), `{"deadline":"2030-01-01T00:00:00Z","evictPerSecond":50,"reason":"upgrade"}`); err != nil {
		t.Fatal(err)
	}
	waitSnap(t, w, time.Second, "drain", func(s *Snapshot) bool {
		m, ok := s.Member("b1")
		return ok && m.State == StateDraining && m.Drain.EvictPerSecond == 50 && !inRing(s, "b1") && inRing(s, "b2")
	})
	cli.Delete(ctxT(t), testKeys.Drain("b1"))
	waitSnap(t, w, time.Second, "undrain", func(s *Snapshot) bool { return inRing(s, "b1") })
}
