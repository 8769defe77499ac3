package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/devgate/devgate/internal/etcdserver"
	"github.com/devgate/devgate/pkg/config"
	"github.com/devgate/devgate/pkg/demo"
	"github.com/devgate/devgate/pkg/registry"
)

func runDev(args []string) error {
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:9000", "device listener of the gateway")
	n := fs.Int("backends", 3, "demo backends to start")
	etcdAddr := fs.String("etcd-listen", "127.0.0.1:2379", "client address of the embedded etcd")
	adminAddr := fs.String("admin-listen", "127.0.0.1:9090", "admin gRPC address (devgate ctl --addr)")
	adminHTTP := fs.String("admin-http-listen", "127.0.0.1:9091", "admin HTTP address (/metrics, /readyz)")
	dataDir := fs.String("data-dir", "", "etcd data directory (default: a temporary one, removed on exit)")
	ttl := fs.Duration("ttl", 5*time.Second, "lease TTL of the demo backends' registrations")
	grace := fs.Duration("grace", 5*time.Second, "shutdown grace period")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *n < 0 || *n > 64 {
		return errors.New("--backends: want 0..64")
	}
	for _, a := range []string{*listen, *etcdAddr, *adminAddr, *adminHTTP} {
		if host, _, err := net.SplitHostPort(a); err != nil || !net.ParseIP(host).IsLoopback() {
			return fmt.Errorf("%q: dev mode stays on loopback addresses", a)
		}
	}
	log, err := newLogger(*level, "console")
	if err != nil {
		return err
	}
	defer log.Sync()

	dir := *dataDir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "devgate-etcd-"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	}
	etcd, err := etcdserver.Start(etcdserver.Config{Dir: dir, ClientAddr: *etcdAddr})
	if err != nil {
		return err
	}
	defer etcd.Stop()
	cfg := &config.Config{Listen: *listen, Etcd: &config.Etcd{Endpoints: []string{etcd.Endpoint()}},
		Admin: config.Admin{Listen: *adminAddr, HTTPListen: *adminHTTP}}
	// Every simulated device comes from 127.0.0.1: per-address limits off.
	cfg.Limits.MaxConnectionsPerIP, cfg.Limits.AcceptRatePerIP = -1, -1
	if err := cfg.Validate(); err != nil {
		return err
	}
	cli, err := etcdClient(cfg.Etcd, zap.NewNop())
	if err != nil {
		return err
	}
	defer cli.Close()

	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	backends, stopBackends, err := startDemoBackends(ctx, cli, *n, *ttl, log)
	defer stopBackends()
	if err != nil {
		return err
	}
	src, m, stopSource, err := ringSource(cfg, log.Named("gateway"))
	if err != nil {
		return err
	}
	defer stopSource()
	p, err := newProxy(cfg, src, log.Named("gateway"))
	if err != nil {
		return err
	}
	ap, err := startAdmin(cfg, p, src, m, log.Named("gateway"))
	if err != nil {
		return err
	}
	defer ap.stop()
	l, err := p.Listen(context.Background(), "tcp", cfg.ListenAddr())
	if err != nil {
		return err
	}
	fmt.Printf("devgate dev %s\n  etcd      %s (embedded, data in %s)\n  gateway   %s (devices connect here)\n  admin     %s (gRPC: devgate ctl), http://%s/metrics\n",
		version, etcd.Endpoint(), dir, l.Addr(), cfg.Admin.GRPCAddr(), cfg.Admin.HTTPAddr())
	for _, b := range backends {
		fmt.Printf("  backend   %-8s %s (registered in etcd, lease TTL %s)\n", b.id, b.addr, *ttl)
	}
	fmt.Printf("\ntry:\n  devgate sim --target %s --devices 1000\n  devgate ctl backends\n  devgate backend --id demo-%d --listen 127.0.0.1:0 --etcd %s   # one more backend; kill -9 it to see its lease expire\n\n",
		l.Addr(), *n+1, etcd.Endpoint())
	return serveUntilSignal(p, l, *grace, log)
}

type devBackend struct{ id, addr string }

// startDemoBackends starts n demo backends, each registered in etcd under
// a lease like a real one; stop deregisters and closes them.
func startDemoBackends(ctx context.Context, cli *clientv3.Client, n int, ttl time.Duration, log *zap.Logger) ([]devBackend, func(), error) {
	var (
		out  []devBackend
		regs []*registry.Registration
		srvs []*demo.Backend
		wg   sync.WaitGroup
	)
	stop := func() {
		for _, r := range regs {
			r.Close()
		}
		for _, b := range srvs {
			b.Close()
		}
		wg.Wait()
	}
	for i := 1; i <= n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return out, stop, err
		}
		b := &demo.Backend{ID: fmt.Sprintf("demo-%d", i), Logger: log.Named("backend")}
		srvs = append(srvs, b)
		wg.Add(1)
		go func() { defer wg.Done(); b.Serve(l) }()
		addr := l.Addr().String()
		reg, err := registry.RegisterBackend(ctx, cli, registry.Keys{}, b.ID, registry.BackendValue{Addr: addr},
			registry.RegisterOptions{TTL: ttl, Logger: log.Named("register")})
		if err != nil {
			return out, stop, err
		}
		regs = append(regs, reg)
		out = append(out, devBackend{b.ID, addr})
	}
	return out, stop, nil
}

func runBackend(args []string) error {
	fs := flag.NewFlagSet("backend", flag.ContinueOnError)
	id := fs.String("id", "demo-1", "backend id, echoed to devices in the login reply")
	listen := fs.String("listen", "127.0.0.1:9101", "address to listen on")
	etcdEP := fs.String("etcd", "", "register in this etcd (comma-separated endpoints); empty: do not register")
	prefix := fs.String("prefix", registry.DefaultPrefix, "etcd key prefix")
	cluster := fs.String("cluster", registry.DefaultCluster, "cluster name under the prefix")
	ttl := fs.Duration("ttl", 5*time.Second, "lease TTL of the registration")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log, err := newLogger(*level, "console")
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	b := &demo.Backend{ID: *id, Logger: log}
	fmt.Printf("demo backend %s on %s\n", *id, l.Addr())
	errc := make(chan error, 1)
	go func() { errc <- b.Serve(l) }()
	stop := b.Close
	if *etcdEP != "" {
		cli, err := registry.ClientConfig{Endpoints: strings.Split(*etcdEP, ",")}.New(zap.NewNop())
		if err != nil {
			b.Close()
			return err
		}
		defer cli.Close()
		reg, err := registry.RegisterBackend(context.Background(), cli, registry.Keys{Prefix: *prefix, Cluster: *cluster},
			*id, registry.BackendValue{Addr: l.Addr().String()}, registry.RegisterOptions{TTL: *ttl, Logger: log})
		if err != nil {
			b.Close()
			return err
		}
		fmt.Printf("registered %s\n", reg.Key())
		stop = func() error { reg.Close(); return b.Close() }
	}
	return waitSignalThen(errc, stop)
}
