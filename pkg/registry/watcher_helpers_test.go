package registry

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func putBackend(t *testing.T, cli *clientv3.Client, k Keys, id, addr string, weight uint32, lease clientv3.LeaseID) {
	t.Helper()
	val, _ := json.Marshal(BackendValue{Addr: addr, Weight: weight})
	var opts []clientv3.OpOption
	if lease != 0 {
		opts = append(opts, clientv3.WithLease(lease))
	}
	if _, err := cli.Put(ctxT(t), k.Backend(id), string(val), opts...); err != nil {
		t.Fatal(err)
	}
}

// startWatcher runs w against cli until the test ends.
func startWatcher(t *testing.T, w *Watcher) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-w.Ready():
	case <-time.After(30 * time.Second): // a first full build is slow under -race
		t.Fatal("no first snapshot in 30s")
	}
}

// waitSnap polls until cond holds for the current snapshot and returns
// how long it took.
func waitSnap(t *testing.T, w *Watcher, within time.Duration, what string, cond func(*Snapshot) bool) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		if s := w.Snapshot(); s != nil && cond(s) {
			return time.Since(start)
		}
		if time.Since(start) > within {
			s := w.Snapshot()
			t.Fatalf("%s: not within %s (snapshot rev %d, members %v)", what, within, s.Revision, ids(s))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func ids(s *Snapshot) []string {
	var out []string
	for _, m := range s.Members {
		out = append(out, m.ID+":"+string(m.State))
	}
	return out
}

func inRing(s *Snapshot, id string) bool {
	for _, b := range s.Ring.Backends() {
		if b.ID == id {
			return true
		}
	}
	return false
}

func clientAt(t *testing.T, endpoint string) *clientv3.Client {
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
