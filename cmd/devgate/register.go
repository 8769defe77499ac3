package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/devgate/devgate/pkg/registry"
	"github.com/devgate/devgate/pkg/ring"
)

// registerFlags are register's command line.
type registerFlags struct {
	etcd, cacert, cert, key, user, pass, prefix, cluster string
	id, addr, checkAddr, zone, level, format             string
	interval, timeout, ttl                               time.Duration
	failures                                             int
	weight                                               uint
	meta                                                 metaFlag
	addrs                                                []string // --addr, repeatable: the backend's ports
}

// newRegisterCmd is `devgate register`, a sidecar for a backend that cannot
// register itself: it keeps backends/<id> in etcd, under a lease, while the
// backend's port accepts TCP connections, and removes it when the port stops
// accepting or the sidecar gets SIGTERM/SIGINT (then it exits 0).
//
//	devgate register --etcd http://etcd:2379 --id netty-1 --addr 10.1.2.3:9000 \
//	    --check-addr 127.0.0.1:9000 --weight 100 --zone a --meta rack=r1
func newRegisterCmd() *cobra.Command {
	f := registerFlags{meta: metaFlag{}}
	cmd := &cobra.Command{
		Use:   "register --etcd URL --id ID --addr ADDR [flags]",
		Short: "register a backend in etcd while its port accepts connections",
		Long: `A sidecar for a backend that cannot register itself: it keeps backends/<id> in
etcd, under a lease, while the backend's port accepts TCP connections, and removes
it when the port stops accepting or the sidecar gets SIGTERM/SIGINT (then it exits 0).`,
		Example: `  devgate register --etcd http://etcd:2379 --id netty-1 --addr 10.1.2.3:9000 \
      --check-addr 127.0.0.1:9000 --weight 100 --zone a --meta rack=r1
  # a backend listening on three ports (each adds a port range per gateway source address):
  devgate register --etcd http://etcd:2379 --id netty-2 --addr 10.1.2.4:9000 \
      --addr 10.1.2.4:9001 --addr 10.1.2.4:9002`,
		Args: noArgs,
		RunE: func(*cobra.Command, []string) error { return runRegister(f) },
	}
	fs := cmd.Flags()
	fs.StringVar(&f.etcd, "etcd", "http://127.0.0.1:2379", "etcd endpoints, comma-separated")
	fs.StringVar(&f.cacert, "etcd-cacert", "", "CA certificate (PEM) verifying etcd")
	fs.StringVar(&f.cert, "etcd-cert", "", "client certificate (PEM) for etcd")
	fs.StringVar(&f.key, "etcd-key", "", "client key (PEM) for etcd")
	fs.StringVar(&f.user, "etcd-user", "", "etcd user")
	fs.StringVar(&f.pass, "etcd-password", "", "etcd password (default $DEVGATE_ETCD_PASSWORD, kept out of ps)")
	fs.StringVar(&f.prefix, "prefix", registry.DefaultPrefix, "etcd key prefix")
	fs.StringVar(&f.cluster, "cluster", registry.DefaultCluster, "cluster name")
	fs.StringVar(&f.id, "id", "", "backend id (required)")
	fs.StringArrayVar(&f.addrs, "addr", nil, "host:port devices are sent to (required); repeat it for a backend with several ports: connections spread over them")
	fs.StringVar(&f.checkAddr, "check-addr", "", "host:port probed with a TCP connect (default the first --addr)")
	fs.DurationVar(&f.interval, "check-interval", 2*time.Second, "time between probes")
	fs.DurationVar(&f.timeout, "check-timeout", time.Second, "connect timeout of one probe")
	fs.IntVar(&f.failures, "check-failures", 2, "consecutive failed probes before deregistering")
	fs.UintVar(&f.weight, "weight", 0, "ring weight 1..10000 (0 means 100)")
	fs.StringVar(&f.zone, "zone", "", "zone of the backend")
	fs.Var(f.meta, "meta", "k=v metadata, repeatable")
	fs.DurationVar(&f.ttl, "ttl", registry.DefaultTTL, "lease TTL; the key outlives a killed sidecar by this much")
	fs.StringVar(&f.level, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&f.format, "log-format", "json", "json or console")
	return cmd
}

func runRegister(f registerFlags) error {
	if len(f.addrs) > 0 {
		f.addr = f.addrs[0]
	}
	switch {
	case f.id == "" || f.addr == "":
		return usagef("--id and --addr are required")
	case f.weight > ring.MaxWeight:
		return usagef("--weight %d over %d", f.weight, ring.MaxWeight)
	case f.interval <= 0 || f.timeout <= 0 || f.failures < 1:
		return usagef("--check-interval and --check-timeout must be positive, --check-failures at least 1")
	}
	if f.checkAddr == "" {
		f.checkAddr = f.addr
	}
	if f.pass == "" {
		f.pass = os.Getenv("DEVGATE_ETCD_PASSWORD")
	}
	v := registry.BackendValue{Addr: f.addr, Weight: uint32(f.weight), Zone: f.zone}
	if len(f.addrs) > 1 {
		v.Addrs = f.addrs
	}
	if len(f.meta) > 0 {
		v.Meta = f.meta
	}
	// Refuse a bad value before touching etcd.
	if b, err := json.Marshal(v); err != nil {
		return err
	} else if _, err := registry.ParseBackend(f.id, b); err != nil {
		return err
	}
	log, err := newLogger(f.level, f.format)
	if err != nil {
		return err
	}
	defer log.Sync()
	cli, err := registry.ClientConfig{
		Endpoints: strings.Split(f.etcd, ","),
		CACert:    f.cacert, Cert: f.cert, Key: f.key,
		Username: f.user, Password: f.pass,
	}.New(log)
	if err != nil {
		return err
	}
	defer cli.Close()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	s := &sidecar{
		cli: cli, keys: registry.Keys{Prefix: f.prefix, Cluster: f.cluster}, id: f.id, value: v,
		opts:      registry.RegisterOptions{TTL: f.ttl, Logger: log},
		checkAddr: f.checkAddr, interval: f.interval, timeout: min(f.timeout, f.interval), failures: f.failures,
		log: log,
	}
	return s.run(ctx)
}

// sidecar registers one backend while its port accepts connections.
type sidecar struct {
	cli       *clientv3.Client
	keys      registry.Keys
	id        string
	value     registry.BackendValue
	opts      registry.RegisterOptions
	checkAddr string
	interval  time.Duration // between probes
	timeout   time.Duration // of one probe
	failures  int           // consecutive failed probes before deregistering
	log       *zap.Logger
}

// run probes every interval until ctx ends, then deregisters. It returns an
// error only for a value etcd would never take.
func (s *sidecar) run(ctx context.Context) error {
	log := s.log.With(zap.String("id", s.id), zap.String("check", s.checkAddr))
	var reg *registry.Registration
	defer func() {
		if reg != nil {
			reg.Close() // logs its own outcome; the lease ends after the TTL anyway
		}
	}()
	tick := time.NewTicker(s.interval)
	defer tick.Stop()
	down := 0
	log.Info("probing backend", zap.Duration("interval", s.interval), zap.Int("failures", s.failures))
	for {
		if err := s.probe(ctx); err == nil {
			if down >= s.failures {
				log.Info("backend accepts connections again")
			}
			down = 0
			if reg == nil {
				// Bounded so that probing goes on while etcd is unreachable.
				rctx, cancel := context.WithTimeout(ctx, max(s.interval, 5*time.Second))
				reg, err = registry.RegisterBackend(rctx, s.cli, s.keys, s.id, s.value, s.opts)
				cancel()
				if errors.Is(err, registry.ErrBadValue) {
					return err
				}
				if err != nil && ctx.Err() == nil {
					log.Warn("register failed; trying again after the next probe", zap.Error(err))
				}
			}
		} else if ctx.Err() == nil {
			down++
			if down == s.failures {
				log.Warn("backend does not accept connections; deregistering", zap.Int("failures", down), zap.Error(err))
				if reg != nil {
					reg.Close()
					reg = nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// probe connects to checkAddr and hangs up.
func (s *sidecar) probe(ctx context.Context) error {
	d := net.Dialer{Timeout: s.timeout}
	c, err := d.DialContext(ctx, "tcp", s.checkAddr)
	if err != nil {
		return err
	}
	return c.Close()
}

// metaFlag collects repeated --meta k=v.
type metaFlag map[string]string

func (m metaFlag) String() string {
	var kv []string
	for k, v := range m {
		kv = append(kv, k+"="+v)
	}
	sort.Strings(kv)
	return strings.Join(kv, ",")
}

// Type names the value in --help.
func (metaFlag) Type() string { return "k=v" }

func (m metaFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("want k=v, got %q", s)
	}
	m[k] = v
	return nil
}
