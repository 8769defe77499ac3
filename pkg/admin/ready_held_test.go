package admin

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/devgate/devgate/internal/etcdserver"
	"github.com/devgate/devgate/pkg/proxy"
	"github.com/devgate/devgate/pkg/registry"
)

// Every backend's lease gone at once: the watcher keeps them held past the
// panic hold (issue 13 item 8), and readiness says so.
func TestReadySaysBackendsAreHeld(t *testing.T) {
	s := etcdserver.StartT(t)
	cli := etcdserver.ClientT(t, s)
	keys := registry.Keys{Prefix: "/devgate-ready", Cluster: "c1"}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	lease, err := cli.Grant(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		v := fmt.Sprintf(`{"addr":"127.0.0.1:%d"}`, 9100+i)
		if _, err := cli.Put(ctx, keys.Backend(fmt.Sprintf("b%d", i)), v, clientv3.WithLease(lease.ID)); err != nil {
			t.Fatal(err)
		}
	}
	w := &registry.Watcher{Client: cli, Keys: keys, Settle: 10 * time.Millisecond, PanicHold: time.Second}
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	defer func() { cancel(); <-done }()
	<-w.Ready()
	svc := &Service{ID: "g1", Client: cli, Watcher: w, Proxy: &proxy.Proxy{Source: w}}
	var why string
	waitUntil(t, "held past the hold", func() bool {
		var ok bool
		ok, why = svc.Ready()
		return ok && w.Stats().PanicExtended > 0 && strings.Contains(why, "holding 3 backends gone from etcd")
	})
	if r := w.Ring(); r.Len() != 3 {
		t.Fatalf("ring of %d", r.Len())
	}
	t.Logf("ready: %s", why)
}
