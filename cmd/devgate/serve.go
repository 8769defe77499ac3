package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/devgate/devgate/pkg/admin"
	"github.com/devgate/devgate/pkg/config"
	"github.com/devgate/devgate/pkg/proxy"
)

// serveFlags are serve's command line.
type serveFlags struct {
	config    string
	grace     time.Duration
	advertise string
}

func newServeCmd() *cobra.Command {
	var f serveFlags
	cmd := &cobra.Command{
		Use:   "serve [--config FILE]",
		Short: "run the gateway from a config file",
		Long: `Runs the gateway from a YAML config file (deploy/devgate.example.yaml shows every
field): a static backend list, or backends registered in etcd.`,
		Example: "  devgate serve --config deploy/devgate.example.yaml",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runServe(f, cmd.Flags().Changed("config"))
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&f.config, "config", defaultConfigFile, "config file (YAML)")
	fs.DurationVar(&f.grace, "grace", 30*time.Second, "on SIGTERM, how long open connections may take to end before they are closed")
	fs.StringVar(&f.advertise, "admin-advertise", "", "address peers dial for the admin API: host (admin.listen's port) or host:port; overrides admin.advertise (Kubernetes: $(POD_IP))")
	return cmd
}

func runServe(f serveFlags, configGiven bool) error {
	cfg, err := loadConfig(f.config, configGiven, func(c *config.Config) error { return c.Admin.SetAdvertise(f.advertise) })
	if err != nil {
		return err
	}
	log, err := newLogger(cfg.Log.Level, cfg.Log.Format)
	if err != nil {
		return err
	}
	defer log.Sync()

	// From here on a signal ends start-up cleanly too (no registration left
	// behind to expire): the same context serveUntilSignal waits on.
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	src, m, stop, err := ringSource(ctx, cfg, log)
	if err != nil {
		return startErr(ctx, err, log)
	}
	defer stop()
	p, err := newProxy(cfg, src, log)
	if err != nil {
		return err
	}
	if err := startupChecks(cfg, p, src.Ring(), log); err != nil {
		return err
	}
	ap, err := startAdmin(cfg, p, src, m, log)
	if err != nil {
		return err
	}
	defer ap.stop()
	l, err := p.Listen(context.Background(), "tcp", cfg.ListenAddr())
	if err != nil {
		return err
	}
	log.Info("devgate serving", zap.String("version", version), zap.Stringer("listen", l.Addr()),
		zap.Int("backends", src.Ring().Len()), zap.String("ring", string(src.Ring().Mode())))
	return serveUntilSignal(ctx, p, l, f.grace, log)
}

// startErr is what a start-up that failed with err returns: nil when a
// signal ended it (ctx done), which is no failure.
func startErr(ctx context.Context, err error, log *zap.Logger) error {
	if ctx.Err() != nil {
		log.Info("signal during start-up; exiting", zap.Error(err))
		return nil
	}
	return err
}

// ringSource is the static list, or etcd when the config has it (then m
// is set); a signal (start done) ends the wait for etcd; stop releases what
// it started.
func ringSource(start context.Context, cfg *config.Config, log *zap.Logger) (src proxy.RingSource, m *membership, stop func(), err error) {
	if cfg.Etcd == nil {
		r, err := cfg.BuildRing()
		if err != nil {
			return nil, nil, nil, err
		}
		return proxy.NewAtomicRing(r), nil, func() {}, nil
	}
	mode, err := cfg.RingMode()
	if err != nil {
		return nil, nil, nil, err
	}
	cli, err := etcdClient(cfg.Etcd, log.Named("etcd"))
	if err != nil {
		return nil, nil, nil, err
	}
	adminAddr := ""
	if cfg.Admin.GRPCAddr() != "off" {
		adminAddr = cfg.Admin.AdvertiseAddr()
	}
	m, err = startMembership(start, cli, cfg.Etcd, mode, gatewayID(cfg), adminAddr, log)
	if err != nil {
		cli.Close()
		return nil, nil, nil, err
	}
	return m.watcher, m, func() { m.stop(); cli.Close() }, nil
}

// newProxy turns the config's limits into proxy options.
func newProxy(cfg *config.Config, src proxy.RingSource, log *zap.Logger) (*proxy.Proxy, error) {
	m, err := cfg.Matcher()
	if err != nil {
		return nil, err
	}
	lim := cfg.Limits
	trusted, err := cfg.ProxyProtocol.TrustedPrefixes()
	if err != nil {
		return nil, err
	}
	sources, err := cfg.Dial.Sources()
	if err != nil {
		return nil, err
	}
	if err := proxy.CheckSourceAddrs(sources); err != nil {
		return nil, fmt.Errorf("dial.sourceAddrs: %w", err)
	}
	p := &proxy.Proxy{
		SourceAddrs:           sources,
		Source:                src,
		Matcher:               m,
		Logger:                log,
		PrereadTimeout:        time.Duration(lim.PrereadTimeout),
		DialTimeout:           time.Duration(lim.DialTimeout),
		MaxTries:              lim.MaxTries,
		MaxConns:              lim.MaxConnections,
		KeepAlive:             time.Duration(lim.KeepAlive),
		DeviceCacheSize:       lim.DeviceCache,
		MaxConnsPerIP:         lim.MaxConnectionsPerIP,
		AcceptRatePerIP:       lim.AcceptRatePerIP,
		AcceptBurstPerIP:      lim.AcceptBurstPerIP,
		IdleTimeout:           time.Duration(lim.IdleTimeout),
		ClientFinTimeout:      time.Duration(lim.ClientFinTimeout),
		ServerFinTimeout:      time.Duration(lim.ServerFinTimeout),
		FDReserve:             lim.FDReserve,
		TrustedProxies:        trusted,
		ProxyProtocolOptional: cfg.ProxyProtocol.Optional,
		SendProxyV2:           cfg.ProxyProtocol.SendV2,
		Goroutines:            !cfg.EventLoopOn(),
	}
	if p.Access, err = accessLog(cfg); err != nil {
		return nil, err
	}
	if p.Rehome, err = rehomeOptions(cfg); err != nil {
		return nil, err
	}
	p.Admission = admissionOptions(cfg.Admission)
	guardOptions(cfg, p)
	if cfg.TLS != nil {
		certs, err := proxy.NewCertReloader(cfg.TLS.CertFile, cfg.TLS.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls: %w", err)
		}
		p.TLS = &tls.Config{GetCertificate: certs.GetCertificate, MinVersion: tls.VersionTLS12}
	}
	if b := cfg.BackendTLS; b != nil {
		tc, err := clientTLS(b.CAFile, b.CertFile, b.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("backendTLS: %w", err)
		}
		tc.ServerName = b.ServerName
		p.BackendTLS = tc
	}
	return p, nil
}

// rehomeOptions turns the rehome section into the proxy's move options.
func rehomeOptions(cfg *config.Config) (proxy.Rehome, error) {
	r := cfg.Rehome
	rf, err := cfg.ReplyFrameConfig()
	if err != nil {
		return proxy.Rehome{}, err
	}
	return proxy.Rehome{Enabled: r.On(), Timeout: r.TimeoutOr(), MaxBuffered: r.MaxBufferedOr(),
		KeepReply: !r.SwallowOn(), DrainGrace: r.DrainGraceOr(), ReplyFrame: rf}, nil
}

// admissionOptions turns the admission section into the proxy's pacing.
func admissionOptions(a config.Admission) proxy.Admission {
	slow := a.SlowStartOr()
	if slow == 0 {
		slow = -1 // the proxy's "none"
	}
	return proxy.Admission{LoginsPerSecond: a.LoginsPerSecond, MaxWait: a.MaxWaitOr(), SlowStart: slow}
}

// serveUntilSignal serves until ctx ends (SIGINT or SIGTERM, maybe already
// during start-up), then stops accepting and gives open connections the
// grace period before closing them. A drain (ctl drain-gateway) does not
// end it: Serve waits for an undrain, and the replica stays up, not ready,
// until the signal.
func serveUntilSignal(ctx context.Context, p *proxy.Proxy, l net.Listener, grace time.Duration, log *zap.Logger) error {
	errc := make(chan error, 1)
	go func() { errc <- p.Serve(l) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	// Readiness fails and accepting stops at once; open connections are
	// evicted paced over most of the grace period, so devices come back
	// through other replicas without a herd; Shutdown closes what is left.
	n := p.Proxied()
	log.Info("shutting down", zap.Duration("grace", grace), zap.Int64("connections", n))
	p.StopAccepting()
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if n > 0 {
		rate := float64(n) / (0.8 * grace.Seconds())
		go admin.Pace(sctx, rate, func(k int) int { return p.Evict("", k, proxy.CauseShutdown) }, nil)
	}
	err := p.Shutdown(sctx)
	if serr := <-errc; serr != nil && !errors.Is(serr, proxy.ErrServerClosed) {
		return serr
	}
	if errors.Is(err, context.DeadlineExceeded) {
		log.Warn("grace period over; closed remaining connections")
		return nil
	}
	return err
}
