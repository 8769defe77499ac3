package registry

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/devgate/devgate/internal/etcdserver"
	"github.com/devgate/devgate/internal/faultproxy"
)

// An idle etcd: the watch must stay open and answered (progress
// notifications), not be called silent and re-listed (issue 13 item 6: a
// watch from revision+1 gets no progress while etcd stays at revision).
func TestIdleEtcdKeepsOneWatch(t *testing.T) {
	idle := 45 * time.Second
	if testing.Short() {
		idle = 10 * time.Second
	}
	// etcd's own timed progress notifications every 10 minutes, as deployed:
	// only the watcher's progress requests keep the watch alive.
	s, err := etcdserver.Start(etcdserver.Config{Dir: t.TempDir(), Quick: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	cli := etcdserver.ClientT(t, s)
	putBackend(t, cli, testKeys, "b1", "127.0.0.1:9101", 0, 0)
	// As in devgate serve: the gateway registers itself with the client its
	// watcher uses. The registration watches its key from the revision after
	// its put, ahead of an idle etcd; etcd answers a progress request only
	// when every watch of the gRPC stream is caught up.
	reg, err := RegisterGateway(ctxT(t), cli, testKeys, "gw-self", GatewayValue{Admin: "127.0.0.1:9090"}, RegisterOptions{TTL: regTTL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	w := newWatcher(cli)
	w.ProgressInterval = time.Second
	startWatcher(t, w)
	rev := w.Snapshot().Revision
	deadline := time.Now().Add(idle)
	for time.Now().Before(deadline) {
		time.Sleep(250 * time.Millisecond)
	}
	st := w.Stats()
	perMin := float64(st.Relists-1) / idle.Minutes()
	t.Logf("idle %s at revision %d: relists %d (%.1f extra per minute), connected=%v staleness=%s",
		idle, rev, st.Relists, perMin, st.Connected, st.Staleness.Round(time.Millisecond))
	if st.Relists != 1 || st.Revision != rev {
		t.Fatalf("relisted on an idle etcd: %+v", st)
	}
	if !st.Connected || st.Staleness > 3*time.Second {
		t.Fatalf("idle watch not kept alive by progress notifications: %+v", st)
	}
}

// etcd restored from an older copy of its data (same cluster id, member id
// and raft term: a copy of the data dir), then written past the revision
// the gateway had, before the gateway got through again. The watch would
// resume silently at its next revision; the lost drain must go within
// seconds (issue 13 item 5).
func TestRestoredCopyBumpedPastIsRepaired(t *testing.T) {
	base := t.TempDir()
	caddr, _ := etcdserver.FreeAddr()
	paddr, _ := etcdserver.FreeAddr()
	cfg := etcdserver.Config{Dir: filepath.Join(base, "live"), ClientAddr: caddr, PeerAddr: paddr,
		Quick: true, ProgressNotifyInterval: 200 * time.Millisecond}
	a, err := etcdserver.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Stop() })
	cli := clientAt(t, a.Endpoint())
	putBackend(t, cli, testKeys, "b1", "127.0.0.1:9101", 0, 0)
	putBackend(t, cli, testKeys, "b2", "127.0.0.1:9102", 0, 0)
	a.Stop() // the backup: a copy of the data dir, without the drain below
	backup := filepath.Join(base, "backup")
	copyDir(t, cfg.Dir, backup)
	if err := a.Restart(); err != nil {
		t.Fatal(err)
	}

	cut := faultproxy.Start(t, caddr)
	w := newWatcher(clientAt(t, "http://"+cut.Addr()))
	w.ProgressInterval = 10 * time.Second // silence is not what must find this
	startWatcher(t, w)
	if _, err := cli.Put(ctxT(t), testKeys.Drain("b1"), `{"deadline":"2030-01-01T00:00:00Z","evictPerSecond":50}`); err != nil {
		t.Fatal(err)
	}
	waitSnap(t, w, 5*time.Second, "drain seen", func(s *Snapshot) bool { return !inRing(s, "b1") })
	seen := w.Snapshot()

	cut.Cut()
	a.Stop()
	rcfg := cfg
	rcfg.Dir = backup
	b, err := etcdserver.Start(rcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Stop)
	cb := clientAt(t, b.Endpoint())
	var last int64
	for i := 0; last <= seen.Revision+5 && i < 1000; i++ {
		r, err := cb.Put(ctxT(t), "/other/key", fmt.Sprint(i))
		if err != nil {
			t.Fatal(err)
		}
		last = r.Header.Revision
		if i == 0 {
			t.Logf("restored: cluster %x (was %x), member %x, term %d", r.Header.ClusterId, seen.ClusterID, r.Header.MemberId, r.Header.RaftTerm)
		}
	}
	before := w.Stats()
	cut.Restore(t)
	d := waitSnap(t, w, 15*time.Second, "lost drain gone", func(s *Snapshot) bool {
		m, ok := s.Member("b1")
		return ok && m.State == StateActive && inRing(s, "b1") && s.Revision >= last
	})
	st := w.Stats()
	t.Logf("revision %d -> %d (restored then bumped to %d); converged %s after the path came back; relists %d -> %d, by reason %v, repairs %d",
		seen.Revision, w.Snapshot().Revision, last, d.Round(time.Millisecond), before.Relists, st.Relists, st.RelistReasons, st.Repairs)
	if st.RelistReasons[ReasonReconnect] == 0 || st.Repairs == 0 {
		t.Fatalf("reason or repair not counted: %+v", st)
	}
}

// copyDir copies an etcd data directory (the member must be stopped).
func copyDir(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		dst := filepath.Join(to, rel)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o700)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Every backend gone from etcd at once (backends healthy but cut off from
// etcd, so their leases expired): the panic hold must not end in an empty
// ring (issue 13 item 8). While the watcher cannot reach etcd, the held
// members stay too; once etcd confirms and others are live, they go.
func TestPanicHoldNeverEmptiesTheRing(t *testing.T) {
	s := etcdserver.StartT(t)
	cli := etcdserver.ClientT(t, s)
	lease, err := cli.Grant(ctxT(t), 2)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		putBackend(t, cli, testKeys, fmt.Sprintf("b%d", i), fmt.Sprintf("127.0.0.1:910%d", i), 0, lease.ID)
	}
	cut := faultproxy.Start(t, s.ClientAddr())
	w := newWatcher(clientAt(t, "http://"+cut.Addr()))
	startWatcher(t, w)
	held := func(s *Snapshot) int {
		n := 0
		for _, m := range s.Members {
			if m.State == StateHeld {
				n++
			}
		}
		return n
	}
	waitSnap(t, w, 10*time.Second, "held", func(s *Snapshot) bool { return held(s) == 3 && s.Ring.Len() == 3 })
	// Well past the hold (2s): still the three, and saying so.
	end := time.Now().Add(3 * w.PanicHold)
	for time.Now().Before(end) {
		if s := w.Snapshot(); s.Ring.Len() != 3 || held(s) != 3 {
			t.Fatalf("hold ended in a ring of %d: %v", s.Ring.Len(), ids(s))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if st := w.Stats(); st.Held != 3 || st.PanicExtended == 0 {
		t.Fatalf("stats do not say the hold goes on: %+v", st)
	}

	// Cut off from etcd: a newcomer's arrival cannot be seen, and the held
	// stay whatever the clock says.
	cut.Cut()
	putBackend(t, cli, testKeys, "b4", "127.0.0.1:9104", 0, 0)
	end = time.Now().Add(3 * w.PanicHold)
	for time.Now().Before(end) {
		if s := w.Snapshot(); s.Ring.Len() != 3 {
			t.Fatalf("ring changed while cut off: %v", ids(s))
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Back: etcd confirms b1-b3 gone and b4 live; the hold is over.
	cut.Restore(t)
	d := waitSnap(t, w, 15*time.Second, "released", func(s *Snapshot) bool { return s.Ring.Len() == 1 && inRing(s, "b4") })
	t.Logf("held released %s after etcd came back with a live backend", d.Round(time.Millisecond))
}
