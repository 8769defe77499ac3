package registry

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap/zaptest"

	"github.com/devgate/devgate/internal/etcdserver"
)

const regTTL = 3 * time.Second

var regKeys = Keys{Prefix: "/devgate-reg", Cluster: "c1"}

func regCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// regOpen registers a backend with TTL regTTL and closes it when the test ends.
func regOpen(t *testing.T, cli *clientv3.Client, id string) *Registration {
	t.Helper()
	r, err := RegisterBackend(regCtx(t), cli, regKeys, id, BackendValue{Addr: "127.0.0.1:9000", Zone: "a"},
		RegisterOptions{TTL: regTTL, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func regGet(t *testing.T, cli *clientv3.Client, key string) *mvccpb.KeyValue {
	t.Helper()
	resp, err := cli.Get(regCtx(t), key)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return nil
	}
	return resp.Kvs[0]
}

// regWait polls key until cond holds and returns how long it took.
func regWait(t *testing.T, cli *clientv3.Client, key string, within time.Duration, what string, cond func(*mvccpb.KeyValue) bool) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		resp, err := cli.Get(ctx, key)
		cancel()
		if err == nil {
			var kv *mvccpb.KeyValue
			if len(resp.Kvs) > 0 {
				kv = resp.Kvs[0]
			}
			if cond(kv) {
				return time.Since(start)
			}
		}
		if time.Since(start) > within {
			t.Fatalf("%s: not within %s (last error %v)", what, within, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func leaseAlive(t *testing.T, cli *clientv3.Client, id clientv3.LeaseID) (granted int64, alive bool) {
	t.Helper()
	resp, err := cli.TimeToLive(regCtx(t), id)
	if err != nil {
		t.Fatal(err)
	}
	return resp.GrantedTTL, resp.TTL > 0
}

func TestRegisterPutsKeyUnderLeaseAndCloseRemovesIt(t *testing.T) {
	s := etcdserver.StartT(t)
	cli := etcdserver.ClientT(t, s)
	r := regOpen(t, cli, "b1")

	kv := regGet(t, cli, regKeys.Backend("b1"))
	if kv == nil || clientv3.LeaseID(kv.Lease) != r.Lease() || r.Lease() == 0 {
		t.Fatalf("key %v, lease %x", kv, r.Lease())
	}
	if b, err := ParseBackend("b1", kv.Value); err != nil || b.Addr != "127.0.0.1:9000" || b.Zone != "a" {
		t.Fatalf("value %s: %+v %v", kv.Value, b, err)
	}
	if granted, alive := leaseAlive(t, cli, r.Lease()); granted != 3 || !alive {
		t.Fatalf("lease granted TTL %d alive %v, want 3 true", granted, alive)
	}
	select {
	case <-r.Done():
		t.Fatal("Done closed before Close")
	default:
	}

	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	<-r.Done()
	if kv := regGet(t, cli, regKeys.Backend("b1")); kv != nil {
		t.Fatalf("key still there after Close: %s", kv.Value)
	}
	if _, alive := leaseAlive(t, cli, r.Lease()); alive {
		t.Fatal("lease alive after Close")
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestRegisterTTLOption(t *testing.T) {
	for _, c := range []struct {
		in   time.Duration
		want int64
	}{{0, 10}, {time.Second, 2}, {2 * time.Second, 2}, {2100 * time.Millisecond, 3}, {time.Minute, 60}} {
		if got := (RegisterOptions{TTL: c.in}).ttl(); got != c.want {
			t.Errorf("TTL %s: got %ds, want %ds", c.in, got, c.want)
		}
	}
}

func TestRegisterBadValue(t *testing.T) {
	s := etcdserver.StartT(t)
	cli := etcdserver.ClientT(t, s)
	ctx := regCtx(t)
	opts := RegisterOptions{TTL: regTTL}
	good := BackendValue{Addr: "10.0.0.1:9000"}
	for name, err := range map[string]error{
		"empty id":    func() error { _, err := RegisterBackend(ctx, cli, regKeys, "", good, opts); return err }(),
		"slash in id": func() error { _, err := RegisterBackend(ctx, cli, regKeys, "a/b", good, opts); return err }(),
		"no port": func() error {
			_, err := RegisterBackend(ctx, cli, regKeys, "b", BackendValue{Addr: "10.0.0.1"}, opts)
			return err
		}(),
		"unspecified ip": func() error {
			_, err := RegisterBackend(ctx, cli, regKeys, "b", BackendValue{Addr: "0.0.0.0:1"}, opts)
			return err
		}(),
		"weight": func() error {
			_, err := RegisterBackend(ctx, cli, regKeys, "b", BackendValue{Addr: "h:1", Weight: 10001}, opts)
			return err
		}(),
		"gateway admin": func() error {
			_, err := RegisterGateway(ctx, cli, regKeys, "g", GatewayValue{Admin: "x y:1"}, opts)
			return err
		}(),
		"empty key": func() error { _, err := Register(ctx, cli, "", []byte("v"), opts); return err }(),
	} {
		if !errors.Is(err, ErrBadValue) {
			t.Errorf("%s: got %v, want ErrBadValue", name, err)
		}
	}
	if resp, err := cli.Get(ctx, regKeys.Root(), clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil || resp.Count != 0 {
		t.Fatalf("keys written: %v %v", resp, err)
	}
}

func TestRegisterGatewayStampsStarted(t *testing.T) {
	s := etcdserver.StartT(t)
	cli := etcdserver.ClientT(t, s)
	r, err := RegisterGateway(regCtx(t), cli, regKeys, "g1", GatewayValue{Admin: "127.0.0.1:9090", Version: "v1"}, RegisterOptions{TTL: regTTL})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	kv := regGet(t, cli, regKeys.Gateway("g1"))
	g, err := ParseGateway("g1", kv.Value)
	if err != nil || g.Started.IsZero() || g.Version != "v1" {
		t.Fatalf("%s: %+v %v", kv.Value, g, err)
	}
}

func TestRegisterGivesUpWhenCtxEndsWhileEtcdDown(t *testing.T) {
	s := etcdserver.StartT(t)
	cli := etcdserver.ClientT(t, s)
	s.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start := time.Now()
	_, err := Register(ctx, cli, regKeys.Backend("b1"), []byte(`{"addr":"h:1"}`), RegisterOptions{TTL: regTTL})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("returned after %s", d)
	}
}

func TestRegisterAgainAfterLeaseRevoked(t *testing.T) {
	s := etcdserver.StartT(t)
	cli := etcdserver.ClientT(t, s)
	r := regOpen(t, cli, "b1")
	key, old := regKeys.Backend("b1"), r.Lease()
	if _, err := cli.Revoke(regCtx(t), old); err != nil {
		t.Fatal(err)
	}
	// Noticed through the key watch (delete) or the next keepalive (TTL/3).
	d := regWait(t, cli, key, regTTL/3+2*time.Second, "key under a new lease", func(kv *mvccpb.KeyValue) bool {
		return kv != nil && kv.Lease != 0 && clientv3.LeaseID(kv.Lease) != old
	})
	t.Logf("re-registered %s after the revoke", d.Round(time.Millisecond))
	kv := regGet(t, cli, key)
	if clientv3.LeaseID(kv.Lease) != r.Lease() {
		t.Fatalf("key lease %x, Registration.Lease %x", kv.Lease, r.Lease())
	}
	if granted, alive := leaseAlive(t, cli, r.Lease()); granted != 3 || !alive {
		t.Fatalf("new lease granted %d alive %v", granted, alive)
	}
}

func TestRegisterPutsBackDeletedKey(t *testing.T) {
	s := etcdserver.StartT(t)
	cli := etcdserver.ClientT(t, s)
	r := regOpen(t, cli, "b1")
	key, lease := regKeys.Backend("b1"), r.Lease()
	if _, err := cli.Delete(regCtx(t), key); err != nil {
		t.Fatal(err)
	}
	d := regWait(t, cli, key, 2*time.Second, "key back", func(kv *mvccpb.KeyValue) bool { return kv != nil })
	t.Logf("key back after %s", d.Round(time.Millisecond))
	if kv := regGet(t, cli, key); clientv3.LeaseID(kv.Lease) != lease || r.Lease() != lease {
		t.Fatalf("lease changed: key %x, registration %x, before %x", kv.Lease, r.Lease(), lease)
	}
}

func TestRegisterLeavesKeyOfAnotherLease(t *testing.T) {
	s := etcdserver.StartT(t)
	cli := etcdserver.ClientT(t, s)
	r := regOpen(t, cli, "b1")
	key := regKeys.Backend("b1")
	// A successor with the same id (rolling restart) takes the key over.
	g, err := cli.Grant(regCtx(t), 30)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(regCtx(t), key, `{"addr":"127.0.0.2:9000"}`, clientv3.WithLease(g.ID)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if kv := regGet(t, cli, key); clientv3.LeaseID(kv.Lease) != g.ID {
		t.Fatalf("key taken back from the successor: lease %x", kv.Lease)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if kv := regGet(t, cli, key); kv == nil || clientv3.LeaseID(kv.Lease) != g.ID {
		t.Fatalf("Close removed the successor's key: %v", kv)
	}
}

// The two restart tests wait out etcd's graceful stop (7s with streams
// open), so they run in parallel.

func TestRegisterSurvivesQuickEtcdRestart(t *testing.T) {
	t.Parallel()
	s := etcdserver.StartT(t)
	cli := etcdserver.ClientT(t, s)
	r := regOpen(t, cli, "b1")
	key := regKeys.Backend("b1")
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	// The lease survives (or is replaced); either way the key is ours.
	d := regWait(t, cli, key, 10*time.Second, "key after a quick restart", func(kv *mvccpb.KeyValue) bool {
		return kv != nil && clientv3.LeaseID(kv.Lease) == r.Lease()
	})
	t.Logf("key ours %s after restart", d.Round(time.Millisecond))
}

func TestRegisterSurvivesLongEtcdOutage(t *testing.T) {
	t.Parallel()
	s := etcdserver.StartT(t)
	cli := etcdserver.ClientT(t, s)
	r := regOpen(t, cli, "b1")
	key, old := regKeys.Backend("b1"), r.Lease()
	ours := func(kv *mvccpb.KeyValue) bool { return kv != nil && clientv3.LeaseID(kv.Lease) == r.Lease() }

	// Down longer than the TTL: the keepalive gives up and the registration
	// retries until etcd is back. etcd restores the old lease with a fresh
	// TTL, so the key shows up at once; it must still be there after that
	// old lease expired (kratos#3883: registrars that stayed gone).
	s.Stop()
	time.Sleep(regTTL + time.Second)
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	d := regWait(t, cli, key, 15*time.Second, "key under a new lease", func(kv *mvccpb.KeyValue) bool {
		return ours(kv) && r.Lease() != old
	})
	t.Logf("key under a new lease %s after restart", d.Round(time.Millisecond))
	time.Sleep(regTTL + time.Second)
	regWait(t, cli, key, 5*time.Second, "key a TTL later", ours)
}
