package registry

import (
	"testing"
	"time"

	"github.com/devgate/devgate/internal/etcdserver"
)

// Changed is closed by the snapshot after it was taken, and not before:
// a reader that takes it, then reads Snapshot, misses no change.
func TestChangedFiresOnEachSnapshot(t *testing.T) {
	s := etcdserver.StartT(t)
	cli := etcdserver.ClientT(t, s)
	putBackend(t, cli, testKeys, "b1", "127.0.0.1:9101", 0, 0)
	w := newWatcher(cli)
	startWatcher(t, w)

	ch := w.Changed()
	before := w.Snapshot()
	select {
	case <-ch:
		t.Fatal("Changed fired with nothing changed in etcd")
	case <-time.After(200 * time.Millisecond):
	}
	putBackend(t, cli, testKeys, "b2", "127.0.0.1:9102", 0, 0)
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatal("Changed did not fire after a backend joined")
	}
	if after := w.Snapshot(); after == before || after.Ring.Len() != 2 {
		t.Fatalf("after Changed fired: ring of %d, same snapshot %v", after.Ring.Len(), after == before)
	}
	if next := w.Changed(); next == ch {
		t.Fatal("Changed returned the channel already closed")
	}
}
