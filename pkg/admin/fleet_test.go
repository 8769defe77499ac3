package admin

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	adminv1 "github.com/devgate/devgate/api/devgate/admin/v1"
	"github.com/devgate/devgate/internal/etcdserver"
	"github.com/devgate/devgate/internal/testkit"
	"github.com/devgate/devgate/pkg/demo"
	"github.com/devgate/devgate/pkg/proxy"
	"github.com/devgate/devgate/pkg/registry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const adminToken, readToken, peerSecret = "admin-secret", "read-secret", "peer-secret"

var fleetKeys = registry.Keys{Cluster: "admin-test"}

// gateway is one replica: watcher, proxy, admin service on a real gRPC port.
type gateway struct {
	id      string
	watcher *registry.Watcher
	proxy   *proxy.Proxy
	svc     *Service
	auth    *Auth
	addr    string // devices
	admin   string // gRPC
}

type fleet struct {
	t        *testing.T
	etcd     *etcdserver.Server
	cli      *clientv3.Client
	gateways []*gateway
	backends map[string]*demo.Backend
	regs     map[string]*registry.Registration
	wg       sync.WaitGroup
	cancel   context.CancelFunc
	ctx      context.Context
	// configure, if set, completes each gateway's service before it runs.
	configure func(*Service)
}

func newFleet(t *testing.T, gateways, backends int) *fleet {
	return newFleetWith(t, gateways, backends, nil)
}

func newFleetWith(t *testing.T, gateways, backends int, configure func(*Service)) *fleet {
	t.Helper()
	f := &fleet{t: t, backends: map[string]*demo.Backend{}, regs: map[string]*registry.Registration{}, configure: configure}
	f.etcd = etcdserver.StartT(t)
	f.cli = etcdserver.ClientT(t, f.etcd)
	f.ctx, f.cancel = context.WithCancel(context.Background())
	t.Cleanup(f.stop)
	for i := 1; i <= backends; i++ {
		f.addBackend(fmt.Sprintf("b%d", i))
	}
	for i := 1; i <= gateways; i++ {
		f.addGateway(fmt.Sprintf("g%d", i))
	}
	for _, g := range f.gateways { // everyone sees everyone
		waitUntil(t, "gateways registered", func() bool { s := g.watcher.Snapshot(); return len(s.Gateways) == gateways && s.Ring.Len() == backends })
	}
	return f
}

func (f *fleet) addBackend(id string) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.t.Fatal(err)
	}
	b := &demo.Backend{ID: id}
	f.wg.Add(1)
	go func() { defer f.wg.Done(); b.Serve(l) }()
	reg, err := registry.RegisterBackend(f.ctx, f.cli, fleetKeys, id, registry.BackendValue{Addr: l.Addr().String()}, registry.RegisterOptions{TTL: 5 * time.Second})
	if err != nil {
		f.t.Fatal(err)
	}
	f.backends[id], f.regs[id] = b, reg
}

func (f *fleet) addGateway(id string) *gateway {
	g := &gateway{id: id}
	g.watcher = &registry.Watcher{Client: f.cli, Keys: fleetKeys, Settle: 10 * time.Millisecond, ProgressInterval: time.Second}
	f.wg.Add(1)
	go func() { defer f.wg.Done(); g.watcher.Run(f.ctx) }()
	<-g.watcher.Ready()
	// All devices are 127.0.0.1. Moves are on; the backends do not opt in, so each is an eviction counted as a move.
	g.proxy = &proxy.Proxy{Source: g.watcher, MaxConnsPerIP: -1, AcceptRatePerIP: -1, Rehome: proxy.Rehome{Enabled: true}}
	dl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.t.Fatal(err)
	}
	g.addr = dl.Addr().String()
	f.wg.Add(1)
	go func() { defer f.wg.Done(); g.proxy.Serve(dl) }()

	al, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.t.Fatal(err)
	}
	g.admin = al.Addr().String()
	key := NewPeerKey([]byte(peerSecret), g.admin)
	auth := &Auth{Tokens: map[string]Role{adminToken: RoleAdmin, readToken: RoleRead}, Peer: key}
	g.auth = auth
	g.svc = &Service{
		ID: id, Version: "test", Started: time.Now(), Proxy: g.proxy, Watcher: g.watcher,
		Client: f.cli, Keys: fleetKeys, PeerTimeout: time.Second,
		DialPeer: func(addr string) (*grpc.ClientConn, error) {
			opts := append(PeerCallOptions(key, addr, nil), grpc.WithTransportCredentials(insecure.NewCredentials()))
			return grpc.NewClient(addr, opts...)
		},
	}
	if f.configure != nil {
		f.configure(g.svc)
	}
	srv := grpc.NewServer(auth.ServerOptions()...)
	adminv1.RegisterAdminServer(srv, g.svc)
	f.wg.Add(2)
	go func() { defer f.wg.Done(); srv.Serve(al) }()
	go func() { defer f.wg.Done(); g.svc.Run(f.ctx); srv.Stop(); g.proxy.Close() }()
	reg, err := registry.RegisterGateway(f.ctx, f.cli, fleetKeys, id, registry.GatewayValue{Admin: g.admin, Version: "test"}, registry.RegisterOptions{TTL: 5 * time.Second})
	if err != nil {
		f.t.Fatal(err)
	}
	f.regs["gateway/"+id] = reg
	f.gateways = append(f.gateways, g)
	return g
}

func (f *fleet) stop() {
	for _, r := range f.regs {
		r.Close()
	}
	f.cancel()
	for _, b := range f.backends {
		b.Close()
	}
	f.wg.Wait()
}

func dialAdmin(addr, token string) (*grpc.ClientConn, error) {
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(tokenCreds(token)))
	}
	return grpc.NewClient(addr, opts...)
}

// tokenCreds sends a bearer token on every call, as devgate ctl does.
type tokenCreds string

func (t tokenCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(t)}, nil
}

func (tokenCreds) RequireTransportSecurity() bool { return false }

func (f *fleet) client(g *gateway, token string) adminv1.AdminClient {
	conn, err := dialAdmin(g.admin, token)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { conn.Close() })
	return adminv1.NewAdminClient(conn)
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testkit.WaitFor(t, 10*time.Second, 10*time.Millisecond, what, cond)
}
