package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/devgate/devgate/internal/etcdserver"
	"github.com/devgate/devgate/pkg/config"
	"github.com/devgate/devgate/pkg/demo"
	"github.com/devgate/devgate/pkg/proxy"
	"github.com/devgate/devgate/pkg/registry"
)

// devFlags are dev's command line.
type devFlags struct {
	listen, etcdAddr, dataDir, level string
	adminAddr, adminHTTP             string
	tokenFile, readTokenFile         string
	backends                         int
	ttl, grace                       time.Duration
	loginsPerSecond                  float64
}

func newDevCmd() *cobra.Command {
	var f devFlags
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "run demo backends and a gateway locally (devices on 127.0.0.1:9000)",
		Long: `Runs everything on loopback: an embedded etcd, demo backends registered in it
under leases, and a gateway with its admin API. make run starts it.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runDev(cmd.OutOrStdout(), f) },
	}
	fs := cmd.Flags()
	fs.StringVar(&f.listen, "listen", "127.0.0.1:9000", "device listener of the gateway")
	fs.IntVar(&f.backends, "backends", 3, "demo backends to start")
	fs.Float64Var(&f.loginsPerSecond, "logins-per-second", 0, "admission.loginsPerSecond: logins a second each backend takes, the rest wait (0: unpaced)")
	fs.StringVar(&f.etcdAddr, "etcd-listen", "127.0.0.1:2379", "client address of the embedded etcd")
	fs.StringVar(&f.adminAddr, "admin-listen", "127.0.0.1:9090", "admin gRPC address (devgate ctl --addr)")
	fs.StringVar(&f.adminHTTP, "admin-http-listen", "127.0.0.1:9091", "admin HTTP address (/metrics, /readyz)")
	fs.StringVar(&f.tokenFile, "admin-token-file", "", "file holding an admin token (default: the admin API and /ui/ are open on loopback)")
	fs.StringVar(&f.readTokenFile, "admin-read-token-file", "", "file holding a read-only token")
	fs.StringVar(&f.dataDir, "data-dir", "", "etcd data directory (default: a temporary one, removed on exit)")
	fs.DurationVar(&f.ttl, "ttl", 5*time.Second, "lease TTL of the demo backends' registrations")
	fs.DurationVar(&f.grace, "grace", 5*time.Second, "shutdown grace period")
	fs.StringVar(&f.level, "log-level", "info", "debug, info, warn or error")
	return cmd
}

func runDev(out io.Writer, f devFlags) error {
	if f.backends < 0 || f.backends > 64 {
		return errors.New("--backends: want 0..64")
	}
	for _, a := range []string{f.listen, f.etcdAddr, f.adminAddr, f.adminHTTP} {
		if host, _, err := net.SplitHostPort(a); err != nil || !net.ParseIP(host).IsLoopback() {
			return fmt.Errorf("%q: dev mode stays on loopback addresses", a)
		}
	}
	log, err := newLogger(f.level, "console")
	if err != nil {
		return err
	}
	defer log.Sync()
	// A signal from here on, start-up included, runs the cleanups below
	// (the etcd data directory, the registrations) instead of killing.
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()

	dir := f.dataDir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "devgate-etcd-"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	}
	etcd, err := etcdserver.Start(etcdserver.Config{Dir: dir, ClientAddr: f.etcdAddr})
	if err != nil {
		return err
	}
	defer etcd.Stop()
	cfg := &config.Config{Listen: f.listen, Etcd: &config.Etcd{Endpoints: []string{etcd.Endpoint()}},
		Admin: config.Admin{Listen: f.adminAddr, HTTPListen: f.adminHTTP}}
	for _, t := range []config.AdminToken{{File: f.tokenFile, Role: "admin"}, {File: f.readTokenFile, Role: "read"}} {
		if t.File != "" {
			cfg.Admin.Tokens = append(cfg.Admin.Tokens, t)
		}
	}
	// Every simulated device comes from 127.0.0.1: per-address limits off.
	cfg.Limits.MaxConnectionsPerIP, cfg.Limits.AcceptRatePerIP = -1, -1
	cfg.Log.Access = "all" // a line per device: what dev mode is for
	// Devices move instead of disconnecting, and come back by themselves.
	on := true
	cfg.Rehome.Enabled, cfg.Rebalance.Auto = &on, &on
	cfg.Admission.LoginsPerSecond = f.loginsPerSecond
	if err := cfg.Validate(); err != nil {
		return err
	}
	cli, err := etcdClient(cfg.Etcd, zap.NewNop())
	if err != nil {
		return err
	}
	defer cli.Close()

	backends, stopBackends, err := startDemoBackends(ctx, cli, f.backends, f.ttl, log)
	defer stopBackends()
	if err != nil {
		return startErr(ctx, err, log)
	}
	src, m, stopSource, err := ringSource(ctx, cfg, log.Named("gateway"))
	if err != nil {
		return startErr(ctx, err, log)
	}
	defer stopSource()
	p, err := newProxy(cfg, src, log.Named("gateway"))
	if err != nil {
		return err
	}
	if err := startupChecks(cfg, p, src.Ring(), log.Named("gateway")); err != nil {
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
	self := selfName(os.Args[0])
	fmt.Fprintf(out, "devgate dev %s\n  etcd      %s (embedded, data in %s)\n  gateway   %s (devices connect here)\n  admin     %s (gRPC: %s ctl), http://%s/metrics\n  dashboard http://%[7]s/ui/\n",
		version, etcd.Endpoint(), dir, l.Addr(), cfg.Admin.GRPCAddr(), self, cfg.Admin.HTTPAddr())
	for _, b := range backends {
		fmt.Fprintf(out, "  backend   %-8s %s (registered in etcd, lease TTL %s)\n", b.id, b.addr, f.ttl)
	}
	fmt.Fprintf(out, "\ntry, in another terminal here:\n  %[1]s sim --target %[2]s --devices 1000\n  %[1]s sim --target %[2]s --devices 1000 --check   # numbered heartbeats, every answer checked; ctrl-C for the report\n  %[1]s ctl backends\n  %[1]s backend --id demo-%[3]d --listen 127.0.0.1:0 --etcd %[4]s --rehome   # one more backend; kill -9 it to see its lease expire\n\n",
		self, l.Addr(), f.backends+1, etcd.Endpoint())
	return serveUntilSignal(ctx, p, l, f.grace, log)
}

type devBackend struct{ id, addr string }

// rehomeMeta is the registration meta of a backend that takes moved devices:
// the demo backend treats a replayed login as the device resuming.
func rehomeMeta() map[string]string { return map[string]string{proxy.MetaRehome: proxy.RehomeLogin} }

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
		reg, err := registry.RegisterBackend(ctx, cli, registry.Keys{}, b.ID, registry.BackendValue{Addr: addr, Meta: rehomeMeta()},
			registry.RegisterOptions{TTL: ttl, Logger: log.Named("register")})
		if err != nil {
			return out, stop, err
		}
		regs = append(regs, reg)
		out = append(out, devBackend{b.ID, addr})
	}
	return out, stop, nil
}

// backendFlags are backend's command line.
type backendFlags struct {
	id, listen, etcd, prefix, cluster, level string
	ttl                                      time.Duration
	rehome                                   bool
}

func newBackendCmd() *cobra.Command {
	var f backendFlags
	cmd := &cobra.Command{
		Use:     "backend [--id ID] [--listen ADDR] [--etcd URL]",
		Short:   "run one demo backend",
		Long:    "Runs one demo backend (stands in for a Netty server): it answers every frame,\nand its login reply names the backend. With --etcd it registers under a lease.",
		Example: "  devgate backend --id demo-4 --listen 127.0.0.1:0 --etcd http://127.0.0.1:2379",
		Args:    noArgs,
		RunE:    func(cmd *cobra.Command, _ []string) error { return runBackend(cmd.OutOrStdout(), f) },
	}
	fs := cmd.Flags()
	fs.StringVar(&f.id, "id", "demo-1", "backend id, echoed to devices in the login reply")
	fs.StringVar(&f.listen, "listen", "127.0.0.1:9101", "address to listen on")
	fs.StringVar(&f.etcd, "etcd", "", "register in this etcd (comma-separated endpoints); empty: do not register")
	fs.StringVar(&f.prefix, "prefix", registry.DefaultPrefix, "etcd key prefix")
	fs.StringVar(&f.cluster, "cluster", registry.DefaultCluster, "cluster name under the prefix")
	fs.DurationVar(&f.ttl, "ttl", 5*time.Second, "lease TTL of the registration")
	fs.BoolVar(&f.rehome, "rehome", false, "register with meta rehome=login: take devices the gateway moves here live (a replayed login resumes the device)")
	fs.StringVar(&f.level, "log-level", "info", "debug, info, warn or error")
	return cmd
}

func runBackend(out io.Writer, f backendFlags) error {
	log, err := newLogger(f.level, "console")
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", f.listen)
	if err != nil {
		return err
	}
	b := &demo.Backend{ID: f.id, Logger: log}
	fmt.Fprintf(out, "demo backend %s on %s\n", f.id, l.Addr())
	errc := make(chan error, 1)
	go func() { errc <- b.Serve(l) }()
	stop := b.Close
	if f.etcd != "" {
		cli, err := registry.ClientConfig{Endpoints: strings.Split(f.etcd, ",")}.New(zap.NewNop())
		if err != nil {
			b.Close()
			return err
		}
		defer cli.Close()
		v := registry.BackendValue{Addr: l.Addr().String()}
		if f.rehome {
			v.Meta = rehomeMeta()
		}
		reg, err := registry.RegisterBackend(context.Background(), cli, registry.Keys{Prefix: f.prefix, Cluster: f.cluster},
			f.id, v, registry.RegisterOptions{TTL: f.ttl, Logger: log})
		if err != nil {
			b.Close()
			return err
		}
		fmt.Fprintf(out, "registered %s\n", reg.Key())
		stop = func() error { reg.Close(); return b.Close() }
	}
	return waitSignalThen(errc, stop)
}
