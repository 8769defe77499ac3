package main

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	adminv1 "github.com/devgate/devgate/api/devgate/admin/v1"
	"github.com/devgate/devgate/internal/etcdserver"
	"github.com/devgate/devgate/pkg/registry"
)

// evilPeer is an admin port that anyone who can write one key under
// gateways/ can list: it records what replicas send it.
type evilPeer struct {
	adminv1.UnimplementedAdminServer
	addr string

	mu    sync.Mutex
	calls int
	md    []metadata.MD
}

func startEvilPeer(t *testing.T, ip string) *evilPeer {
	t.Helper()
	e := &evilPeer{}
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		md, _ := metadata.FromIncomingContext(ctx)
		e.mu.Lock()
		e.calls++
		e.md = append(e.md, md.Copy())
		e.mu.Unlock()
		return h(ctx, req)
	}))
	adminv1.RegisterAdminServer(srv, e)
	l, err := netListen(ip)
	if err != nil {
		t.Fatal(err)
	}
	e.addr = l.Addr().String()
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	return e
}

func (e *evilPeer) LocalStatus(context.Context, *adminv1.LocalStatusRequest) (*adminv1.Gateway, error) {
	return &adminv1.Gateway{Id: "zz-evil", Admin: e.addr, Ready: true}, nil
}

func (e *evilPeer) seen() (int, []metadata.MD) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.calls, append([]metadata.MD(nil), e.md...)
}

// replay calls target with everything the evil peer was sent, as the
// caller of each mutation.
func replay(t *testing.T, target string, md metadata.MD) []error {
	t.Helper()
	api := adminConn(t, target, "")
	out := metadata.MD{}
	for k, v := range md {
		if strings.HasPrefix(k, ":") || k == "content-type" || k == "user-agent" || k == "grpc-accept-encoding" || k == "te" {
			continue
		}
		out[k] = v
	}
	ctx, cancel := context.WithTimeout(metadata.NewOutgoingContext(context.Background(), out), 5*time.Second)
	defer cancel()
	var errs []error
	_, err := api.DrainBackend(ctx, &adminv1.DrainBackendRequest{Id: "b1", Deadline: durationpb.New(0)})
	errs = append(errs, err)
	_, err = api.DrainGateway(ctx, &adminv1.DrainGatewayRequest{Id: "gw-b"})
	errs = append(errs, err)
	_, err = api.LocalStatus(ctx, &adminv1.LocalStatusRequest{})
	errs = append(errs, err)
	return errs
}

// TestPeerCallsCarryNoOperatorToken: a read-only `ctl gateways` through
// the real binary against two real replicas, with an impostor registered
// under gateways/ in a real etcd. The impostor must see neither token nor
// anything it can replay to perform a mutation; the real peer still
// answers. A replica with admin.peerNetworks does not dial it at all.
func TestPeerCallsCarryNoOperatorToken(t *testing.T) {
	bin := devgateBin(t)
	etcd := etcdserver.StartT(t)
	cli := etcdserver.ClientT(t, etcd)
	const prefix = "/peer-test"
	keys := registry.Keys{Prefix: prefix, Cluster: "c"}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, keys.Backend("b1"), `{"addr":"127.0.0.1:9","weight":100}`); err != nil {
		t.Fatal(err)
	}
	evil := startEvilPeer(t, "127.0.0.5")
	if _, err := cli.Put(ctx, keys.Gateway("zz-evil"), `{"admin":"`+evil.addr+`","version":"evil"}`); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	const adminTok, readTok = "admin-token-0123456789abcdef", "read-token-0123456789abcdef"
	tokens := "  tokens:\n    - {file: " + writeFile(t, dir, "token-admin", adminTok) + ", role: admin}\n" +
		"    - {file: " + writeFile(t, dir, "token-read", readTok) + ", role: read}\n"
	addrs := map[string]string{}
	for _, id := range []string{"gw-a", "gw-b"} {
		addrs[id] = freeAddrOn(t, "127.0.0.1")
		cfg := writeFile(t, dir, id+".yaml", serveConfig(etcd.Endpoint(), prefix, id, addrs[id], freeAddrOn(t, "127.0.0.1"), tokens))
		startChild(t, bin, "serve", "--config", cfg, "--grace", "1s")
	}
	api := adminConn(t, addrs["gw-a"], adminTok)
	until(t, 60*time.Second, "both replicas registered and answering", func() bool {
		c, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		r, err := api.ListGateways(c, &adminv1.ListGatewaysRequest{})
		return err == nil && len(r.GetGateways()) >= 2
	})

	out, code := runCtlBin(t, bin, "--addr", addrs["gw-a"], "--token", readTok, "gateways")
	if code != 0 || !strings.Contains(out, "gw-b") {
		t.Errorf("ctl gateways: exit %d, the real peer gw-b is not listed:\n%s", code, out)
	}
	calls, mds := evil.seen()
	if calls == 0 {
		t.Fatal("the impostor was never called: the test does not test the leak")
	}
	for _, md := range mds {
		for k, vs := range md {
			for _, v := range vs {
				if strings.Contains(v, adminTok) || strings.Contains(v, readTok) {
					t.Errorf("the impostor under gateways/ got an operator token in %s: %q", k, v)
				}
			}
		}
		// What it got must not let it mutate, on either replica.
		for _, target := range []string{addrs["gw-a"], addrs["gw-b"]} {
			for i, err := range replay(t, target, md) {
				if c := status.Code(err); c != codes.Unauthenticated && c != codes.PermissionDenied {
					t.Errorf("replay %d of what the impostor got to %s: %v (want Unauthenticated or PermissionDenied)", i, target, err)
				}
			}
		}
	}
	gctx, gcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer gcancel()
	if r, err := cli.Get(gctx, keys.Drain("b1")); err != nil || len(r.Kvs) != 0 {
		t.Errorf("b1 drained by a replayed peer call: %v %v", r, err)
	}
	t.Logf("impostor calls: %d", calls)

	// A replica dialling peers only on 127.0.0.1 does not call 127.0.0.5.
	addrC := freeAddrOn(t, "127.0.0.1")
	cfg := writeFile(t, dir, "gw-c.yaml", serveConfig(etcd.Endpoint(), prefix, "gw-c", addrC, freeAddrOn(t, "127.0.0.1"),
		tokens+"  peerNetworks: [127.0.0.1/32]\n"))
	startChild(t, bin, "serve", "--config", cfg, "--grace", "1s")
	apiC := adminConn(t, addrC, readTok)
	until(t, 60*time.Second, "gw-c answering", func() bool {
		c, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		_, err := apiC.LocalStatus(c, &adminv1.LocalStatusRequest{})
		return err == nil
	})
	before, _ := evil.seen()
	out, _ = runCtlBin(t, bin, "--addr", addrC, "--token", readTok, "gateways")
	after, _ := evil.seen()
	if after != before {
		t.Errorf("gw-c called the impostor outside admin.peerNetworks (%d calls)", after-before)
	}
	if !strings.Contains(out, "gw-a") || !strings.Contains(out, "peerNetworks") {
		t.Errorf("ctl gateways on gw-c: want gw-a listed and the impostor refused by peerNetworks:\n%s", out)
	}
}
