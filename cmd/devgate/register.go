package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/devgate/devgate/pkg/registry"
	"github.com/devgate/devgate/pkg/ring"
)

// runRegister is `devgate register`, a sidecar for a backend that cannot
// register itself: it keeps backends/<id> in etcd, under a lease, while the
// backend's port accepts TCP connections, and removes it when the port stops
// accepting or the sidecar gets SIGTERM/SIGINT (then it exits 0).
//
//	devgate register --etcd http://etcd:2379 --id netty-1 --addr 10.1.2.3:9000 \
//	    --check-addr 127.0.0.1:9000 --weight 100 --zone a --meta rack=r1
func runRegister(args []string) error {
	fs := flag.NewFlagSet("register", flag.ContinueOnError)
	etcd := fs.String("etcd", "http://127.0.0.1:2379", "etcd endpoints, comma-separated")
	cacert := fs.String("etcd-cacert", "", "CA certificate (PEM) verifying etcd")
	cert := fs.String("etcd-cert", "", "client certificate (PEM) for etcd")
	key := fs.String("etcd-key", "", "client key (PEM) for etcd")
	user := fs.String("etcd-user", "", "etcd user")
	pass := fs.String("etcd-password", "", "etcd password (default $DEVGATE_ETCD_PASSWORD, kept out of ps)")
	prefix := fs.String("prefix", registry.DefaultPrefix, "etcd key prefix")
	cluster := fs.String("cluster", registry.DefaultCluster, "cluster name")
	id := fs.String("id", "", "backend id (required)")
	addr := fs.String("addr", "", "host:port devices are sent to (required)")
	checkAddr := fs.String("check-addr", "", "host:port probed with a TCP connect (default --addr)")
	interval := fs.Duration("check-interval", 2*time.Second, "time between probes")
	timeout := fs.Duration("check-timeout", time.Second, "connect timeout of one probe")
	failures := fs.Int("check-failures", 2, "consecutive failed probes before deregistering")
	weight := fs.Uint("weight", 0, "ring weight 1..10000 (0 means 100)")
	zone := fs.String("zone", "", "zone of the backend")
	meta := metaFlag{}
	fs.Var(meta, "meta", "k=v metadata, repeatable")
	ttl := fs.Duration("ttl", registry.DefaultTTL, "lease TTL; the key outlives a killed sidecar by this much")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	format := fs.String("log-format", "json", "json or console")
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch {
	case fs.NArg() > 0:
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	case *id == "" || *addr == "":
		return errors.New("--id and --addr are required")
	case *weight > ring.MaxWeight:
		return fmt.Errorf("--weight %d over %d", *weight, ring.MaxWeight)
	case *interval <= 0 || *timeout <= 0 || *failures < 1:
		return errors.New("--check-interval and --check-timeout must be positive, --check-failures at least 1")
	}
	if *checkAddr == "" {
		*checkAddr = *addr
	}
	if *pass == "" {
		*pass = os.Getenv("DEVGATE_ETCD_PASSWORD")
	}
	v := registry.BackendValue{Addr: *addr, Weight: uint32(*weight), Zone: *zone}
	if len(meta) > 0 {
		v.Meta = meta
	}
	// Refuse a bad value before touching etcd.
	if b, err := json.Marshal(v); err != nil {
		return err
	} else if _, err := registry.ParseBackend(*id, b); err != nil {
		return err
	}
	log, err := newLogger(*level, *format)
	if err != nil {
		return err
	}
	defer log.Sync()
	cli, err := registry.ClientConfig{
		Endpoints: strings.Split(*etcd, ","),
		CACert:    *cacert, Cert: *cert, Key: *key,
		Username: *user, Password: *pass,
	}.New(log)
	if err != nil {
		return err
	}
	defer cli.Close()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	s := &sidecar{
		cli: cli, keys: registry.Keys{Prefix: *prefix, Cluster: *cluster}, id: *id, value: v,
		opts:      registry.RegisterOptions{TTL: *ttl, Logger: log},
		checkAddr: *checkAddr, interval: *interval, timeout: min(*timeout, *interval), failures: *failures,
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

func (m metaFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("want k=v, got %q", s)
	}
	m[k] = v
	return nil
}
