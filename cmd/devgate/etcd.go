package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/devgate/devgate/pkg/config"
	"github.com/devgate/devgate/pkg/registry"
	"github.com/devgate/devgate/pkg/ring"
)

// etcdClient builds a client from the config's etcd section.
func etcdClient(e *config.Etcd, log *zap.Logger) (*clientv3.Client, error) {
	cc := registry.ClientConfig{
		Endpoints: e.Endpoints, CACert: e.CAFile, Cert: e.CertFile, Key: e.KeyFile,
		Username: e.Username, DialTimeout: time.Duration(e.DialTimeout),
	}
	if e.PasswordFile != "" {
		b, err := os.ReadFile(e.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("etcd password: %w", err)
		}
		cc.Password = strings.TrimSpace(string(b))
	}
	return cc.New(log)
}

// membership runs the watcher that turns etcd into rings and registers this
// gateway under gateways/, until stop.
type membership struct {
	id      string
	client  *clientv3.Client
	keys    registry.Keys
	watcher *registry.Watcher
	reg     *registry.Registration
	cancel  context.CancelFunc // the watcher's
	done    chan struct{}
}

// startMembership starts the watcher and registers the gateway. start
// bounds only that: the wait for the first ring and the registration (a
// signal then ends it); the watcher and the registration's
// keepalive outlive it, so the ring stays current while draining.
func startMembership(start context.Context, cli *clientv3.Client, e *config.Etcd, mode ring.Mode, gatewayID, adminAddr string, log *zap.Logger) (*membership, error) {
	keys := registry.Keys{Prefix: e.Prefix, Cluster: e.Cluster}
	w := &registry.Watcher{
		Client: cli, Keys: keys, Mode: mode, Logger: log.Named("registry"),
		PanicThreshold: e.PanicThreshold,
		PanicWindow:    time.Duration(e.PanicWindow),
		PanicHold:      time.Duration(e.PanicHold),
		ListTimeout:    time.Duration(e.DialTimeout), // zero: the registry's default
	}
	var last []string
	w.OnSnapshot = func(s *registry.Snapshot) {
		var now []string
		for _, m := range s.Members {
			now = append(now, m.ID+"("+string(m.State)+")")
		}
		if strings.Join(now, " ") != strings.Join(last, " ") {
			log.Info("ring changed", zap.Int64("revision", s.Revision), zap.Int("inRing", s.Ring.Len()), zap.Strings("backends", now))
			last = now
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &membership{id: gatewayID, client: cli, keys: keys, watcher: w, cancel: cancel, done: make(chan struct{})}
	go func() { defer close(m.done); w.Run(ctx) }()

	log.Info("waiting for the first ring from etcd", zap.Strings("endpoints", e.Endpoints), zap.String("root", keys.Root()))
	select {
	case <-w.Ready():
	case <-start.Done():
		m.stop()
		return nil, start.Err()
	}
	reg, err := registry.RegisterGateway(start, cli, keys, gatewayID,
		registry.GatewayValue{Admin: adminAddr, Version: version, Started: time.Now().UTC()},
		registry.RegisterOptions{TTL: time.Duration(e.LeaseTTL), Logger: log.Named("register")})
	if err != nil {
		m.stop()
		return nil, fmt.Errorf("register gateway %s: %w", gatewayID, err)
	}
	m.reg = reg
	return m, nil
}

// stop ends the watcher, deregisters the gateway and waits for the watcher.
func (m *membership) stop() {
	m.cancel()
	if m.reg != nil {
		m.reg.Close()
	}
	<-m.done
}

func gatewayID(cfg *config.Config) string {
	if cfg.Gateway.ID != "" {
		return cfg.Gateway.ID
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return fmt.Sprintf("gateway-%d", os.Getpid())
}
