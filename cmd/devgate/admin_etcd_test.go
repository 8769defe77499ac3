package main

import (
	"context"
	"strings"
	"testing"
	"time"

	adminv1 "github.com/devgate/devgate/api/devgate/admin/v1"
	"github.com/devgate/devgate/internal/etcdserver"
	"github.com/devgate/devgate/internal/faultproxy"
	"github.com/devgate/devgate/pkg/registry"
)

// TestAdminWritesDuringEtcdTrouble, through serve and ctl: a drain while
// replicas are cut off from etcd names them as not confirmed (also one
// whose lease expired meanwhile) instead of claiming every gateway; with
// etcd stopped, a drain answers Unavailable with etcd's reason well before ctl's deadline, and
// ctl does not blame the gateway.
func TestAdminWritesDuringEtcdTrouble(t *testing.T) {
	bin := devgateBin(t)
	etcd := etcdserver.StartT(t)
	cli := etcdserver.ClientT(t, etcd)
	const prefix = "/etcd-trouble"
	keys := registry.Keys{Prefix: prefix, Cluster: "c"}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, b := range []string{"b1", "b2", "b3"} {
		if _, err := cli.Put(ctx, keys.Backend(b), `{"addr":"127.0.0.1:9","weight":100}`); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	const adminTok = "admin-token-0123456789abcdef"
	tokens := "  tokens:\n    - {file: " + writeFile(t, dir, "token-admin", adminTok) + ", role: admin}\n"
	// gw-b and gw-c reach etcd through proxies; gw-c's lease is short, so
	// it leaves gateways/ soon after it is cut off, yet keeps routing.
	proxyB := faultproxy.Start(t, strings.TrimPrefix(etcd.Endpoint(), "http://"))
	proxyC := faultproxy.Start(t, strings.TrimPrefix(etcd.Endpoint(), "http://"))
	addrs := map[string]string{}
	for id, ep := range map[string]string{"gw-a": etcd.Endpoint(), "gw-b": "http://" + proxyB.Addr(), "gw-c": "http://" + proxyC.Addr()} {
		addrs[id] = freeAddrOn(t, "127.0.0.1")
		cfg := serveConfig(ep, prefix, id, addrs[id], freeAddrOn(t, "127.0.0.1"), tokens)
		if id == "gw-c" {
			cfg = strings.Replace(cfg, "leaseTTL: 30s", "leaseTTL: 3s", 1)
		}
		startChild(t, bin, "serve", "--config", writeFile(t, dir, id+".yaml", cfg), "--grace", "1s")
	}
	api := adminConn(t, addrs["gw-a"], adminTok)
	listed := func() map[string]bool {
		c, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		r, err := api.ListGateways(c, &adminv1.ListGatewaysRequest{})
		ids := map[string]bool{}
		for _, g := range r.GetGateways() {
			ids[g.GetId()] = err == nil && r.GetConsistent() && !r.GetPartial().GetPartial()
		}
		return ids
	}
	until(t, 60*time.Second, "three replicas on one revision", func() bool {
		ids := listed()
		return len(ids) == 3 && ids["gw-a"] && ids["gw-b"] && ids["gw-c"]
	})

	// Cut off from etcd, gw-b and gw-c cannot see the drain, so they
	// cannot confirm it; gw-c has left gateways/ by then.
	proxyB.Cut()
	proxyC.Cut()
	until(t, 30*time.Second, "gw-c's lease expired", func() bool { ids := listed(); return len(ids) == 2 })
	out, code := runCtlBin(t, bin, "--addr", addrs["gw-a"], "--token", adminTok, "drain", "b1", "--deadline", "1m")
	if code == 0 || strings.Contains(out, "every gateway") || !strings.Contains(out, "NOT CONFIRMED by gw-b") || !strings.Contains(out, "NOT CONFIRMED by gw-c") {
		t.Errorf("drain with gw-b and gw-c cut off from etcd: exit %d; want both named as not confirmed, no claim of every gateway:\n%s", code, out)
	}
	gctx, gcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer gcancel()
	st, err := adminConn(t, addrs["gw-b"], adminTok).LocalStatus(gctx, &adminv1.LocalStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	r, err := cli.Get(gctx, keys.Drain("b1"))
	if err != nil || len(r.Kvs) != 1 {
		t.Fatalf("drain of b1 not stored: %v %v", r, err)
	}
	if st.RingRevision >= r.Kvs[0].ModRevision {
		t.Fatalf("gw-b routes on revision %d >= the drain's %d: it was not cut off", st.RingRevision, r.Kvs[0].ModRevision)
	}
	t.Logf("gw-b routes on revision %d, the drain is %d", st.RingRevision, r.Kvs[0].ModRevision)

	// etcd stopped: Unavailable with etcd's reason, well before --timeout.
	etcd.Stop()
	start := time.Now()
	out, code = runCtlBin(t, bin, "--addr", addrs["gw-a"], "--token", adminTok, "--timeout", "20s", "drain", "b2")
	took := time.Since(start)
	t.Logf("drain with etcd stopped answered in %s", took.Round(time.Millisecond))
	if code == 0 || !strings.Contains(out, "etcd unavailable") || !strings.Contains(out, "etcd: store the drain of b2") || strings.Contains(out, "cannot reach") {
		t.Errorf("drain with etcd stopped: exit %d, want etcd's reason without blaming the gateway:\n%s", code, out)
	}
	if took > 10*time.Second {
		t.Errorf("drain with etcd stopped took %s: it waited for the client's deadline", took)
	}
	start = time.Now()
	out, code = runCtlBin(t, bin, "--addr", addrs["gw-a"], "--token", adminTok, "--timeout", "20s", "undrain", "b1")
	if took := time.Since(start); code == 0 || took > 10*time.Second || !strings.Contains(out, "etcd: delete the drain of b1") {
		t.Errorf("undrain with etcd stopped: exit %d after %s, want etcd's reason before the deadline:\n%s", code, took, out)
	}
}
