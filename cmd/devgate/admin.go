package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	adminv1 "github.com/devgate/devgate/api/devgate/admin/v1"
	"github.com/devgate/devgate/pkg/admin"
	"github.com/devgate/devgate/pkg/config"
	"github.com/devgate/devgate/pkg/metrics"
	"github.com/devgate/devgate/pkg/proxy"
)

// adminPlane is the admin gRPC server and the admin HTTP server of one
// replica.
type adminPlane struct {
	svc    *admin.Service // nil without etcd
	auth   *admin.Auth    // nil without the admin API
	ready  func() (bool, string)
	grpc   *grpc.Server
	health *health.Server
	http   *http.Server
	wg     sync.WaitGroup
	cancel context.CancelFunc
}

// startAdmin serves the admin API and the HTTP port. The
// proxy's preread hook is set here, so call it before the proxy serves.
func startAdmin(cfg *config.Config, p *proxy.Proxy, src proxy.RingSource, m *membership, log *zap.Logger) (*adminPlane, error) {
	a := &adminPlane{}
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(metrics.NewProxyCollector(p), metrics.NewBuildInfo(version, revision), metrics.NewAdmissionCollector(p),
		metrics.NewGuardCollector(p))
	hist := metrics.NewPrereadHistogram()
	reg.MustRegister(hist)
	p.OnPreread = metrics.ObserveSeconds(hist)
	pause := metrics.NewRehomePauseHistogram()
	reg.MustRegister(pause)
	p.OnMove = metrics.ObserveMove(pause)
	wait := metrics.NewAdmissionWaitHistogram()
	reg.MustRegister(wait)
	p.OnAdmissionWait = metrics.ObserveSeconds(wait)
	a.ready = func() (bool, string) {
		if p.Draining() {
			return false, "draining"
		}
		if r := src.Ring(); r == nil {
			return false, "no ring yet"
		}
		return true, "ok"
	}

	if cfg.Admin.GRPCAddr() != "off" {
		if m != nil {
			reg.MustRegister(metrics.NewRegistryCollector(m.watcher))
		}
		if err := a.startGRPC(ctx, cfg, p, newAdminFleet(cfg, src, m), reg, log); err != nil {
			cancel()
			return nil, err
		}
		a.ready = a.svc.Ready
	}
	ho := admin.HTTPOptions{Gatherer: reg, Ready: func() (bool, string) { return a.ready() }, Pprof: cfg.Admin.Pprof}
	if a.svc != nil { // the JSON API and the dashboard, on the same service and auth
		if ok, why := apiExposed(cfg.Admin, a.auth.Open); ok {
			hist := &admin.History{}
			a.wg.Add(1)
			go func() { defer a.wg.Done(); hist.Run(ctx, p) }()
			ho.API = &admin.API{Server: a.svc, Auth: a.auth, History: hist, ID: a.svc.ID}
		} else {
			log.Warn("dashboard and JSON API off on the admin HTTP port: "+why, zap.String("addr", cfg.Admin.HTTPAddr()))
		}
	}
	h := admin.NewHTTPHandler(ho)
	a.http = admin.NewHTTPServer(cfg.Admin.HTTPAddr(), h)
	l, err := net.Listen("tcp", cfg.Admin.HTTPAddr())
	if err != nil {
		a.stop()
		return nil, fmt.Errorf("admin http: %w", err)
	}
	if cfg.Admin.HTTPTLS {
		serverTLS, _, err := loadAdminTLS(cfg.Admin)
		if err != nil {
			l.Close()
			a.stop()
			return nil, err
		}
		l = tls.NewListener(l, serverTLS)
	}
	a.wg.Add(1)
	go func() { defer a.wg.Done(); a.http.Serve(l) }()
	log.Info("admin http serving", zap.Stringer("addr", l.Addr()), zap.Bool("pprof", cfg.Admin.Pprof))
	if cfg.Admin.Pprof && !loopback(cfg.Admin.HTTPAddr()) {
		log.Warn("INSECURE: pprof served without authentication on a non-loopback address (admin.insecure)", zap.String("addr", cfg.Admin.HTTPAddr()))
	}
	if m != nil { // login pacing: the replicas' split and slow start follow etcd
		a.wg.Add(1)
		go func() { defer a.wg.Done(); admin.FollowAdmission(ctx, m.watcher, p) }()
	}
	return a, nil
}

func (a *adminPlane) startGRPC(ctx context.Context, cfg *config.Config, p *proxy.Proxy, m adminFleet, reg prometheus.Registerer, log *zap.Logger) error {
	ac := cfg.Admin
	auth, peerKey, err := loadAuth(ac, log)
	if err != nil {
		return err
	}
	serverTLS, peerTLS, err := loadAdminTLS(ac)
	if err != nil {
		return err
	}
	peerNets, err := ac.PeerPrefixes()
	if err != nil {
		return err
	}
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "devgate_admin_refused_total", Help: "Admin API calls refused, by reason.",
	}, []string{"reason"})
	reg.MustRegister(refused)
	for _, r := range []string{"unauthenticated", "permission_denied"} { // at 0 before the first: alerts and panels see the series
		refused.WithLabelValues(r)
	}
	auth.OnRefused = func(reason string) { refused.WithLabelValues(reason).Inc() }
	auth.Audit = log.Named("audit")
	a.auth = auth
	gm := metrics.NewGRPCServerMetrics()
	reg.MustRegister(gm)
	opts := append([]grpc.ServerOption{ // first: calls auth refuses are counted too
		grpc.ChainUnaryInterceptor(gm.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(gm.StreamServerInterceptor()),
	}, auth.ServerOptions()...)
	if serverTLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(serverTLS)))
	}
	a.grpc = grpc.NewServer(append(opts, grpc.MaxRecvMsgSize(1<<20), grpc.MaxConcurrentStreams(256))...)
	a.svc = &admin.Service{
		ID: m.id, Version: version, Started: time.Now(), Proxy: p, Watcher: m.fleet,
		Client: m.client, Keys: m.keys, Logger: log.Named("admin"),
		LookupFallbacks: max(cfg.Limits.MaxTries, 3) - 1,
		AutoRebalance:   cfg.Rebalance.AutoOn(),
		RebalancePace:   cfg.Rebalance.PerSecondOr(),
		DialPeer: func(addr string) (*grpc.ClientConn, error) {
			creds := insecure.NewCredentials()
			if peerTLS != nil {
				creds = credentials.NewTLS(peerTLS)
			}
			// The caller's token never goes to a peer: a credential
			// signed for this address, method and the caller's role does.
			dopts := append(admin.PeerCallOptions(peerKey, addr, peerNets), grpc.WithTransportCredentials(creds))
			return grpc.NewClient(addr, dopts...)
		},
	}
	adminv1.RegisterAdminServer(a.grpc, a.svc)
	a.health = health.NewServer()
	healthpb.RegisterHealthServer(a.grpc, a.health)
	reflection.Register(a.grpc)
	gm.InitializeMetrics(a.grpc)
	l, err := net.Listen("tcp", ac.GRPCAddr())
	if err != nil {
		return fmt.Errorf("admin grpc: %w", err)
	}
	a.wg.Add(3)
	go func() { defer a.wg.Done(); a.grpc.Serve(l) }()
	go func() { defer a.wg.Done(); a.svc.Run(ctx) }()
	go func() { // health follows readiness
		defer a.wg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			st := healthpb.HealthCheckResponse_NOT_SERVING
			if ok, _ := a.svc.Ready(); ok {
				st = healthpb.HealthCheckResponse_SERVING
			}
			a.health.SetServingStatus("", st)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	log.Info("admin grpc serving", zap.Stringer("addr", l.Addr()), zap.String("advertise", ac.AdvertiseAddr()),
		zap.Bool("tls", serverTLS != nil), zap.Int("tokens", len(ac.Tokens)), zap.Bool("open", auth.Open),
		zap.Bool("peerKey", peerKey != nil), zap.Strings("peerNetworks", ac.PeerNetworks))
	warnInsecure(ac, auth.Open, serverTLS != nil, log)
	return nil
}

// apiExposed says whether the dashboard and the JSON API may be served on
// the HTTP port: not to more of the network than the gRPC API, and tokens
// not in clear unless admin.plaintextTokens allows it.
func apiExposed(ac config.Admin, open bool) (bool, string) {
	switch {
	case loopback(ac.HTTPAddr()):
	case open && !ac.Insecure:
		return false, "the admin API has no tokens or client CA and admin.httpListen is not loopback (set admin.tokens, or admin.insecure)"
	case len(ac.Tokens) > 0 && !ac.HTTPTLS && !ac.PlaintextTokens:
		return false, "tokens would cross the network in clear (set admin.httpTLS, or admin.plaintextTokens)"
	}
	return true, ""
}

// warnInsecure says loudly what an insecure opt-in exposes.
func warnInsecure(ac config.Admin, open, tls bool, log *zap.Logger) {
	if open && !loopback(ac.GRPCAddr()) {
		log.Warn("INSECURE: admin API without authentication on a non-loopback address (admin.insecure): anyone who reaches it is admin",
			zap.String("addr", ac.GRPCAddr()))
	}
	if len(ac.Tokens) > 0 && !tls && !loopback(ac.GRPCAddr()) {
		log.Warn("INSECURE: admin tokens cross the network in clear (admin.plaintextTokens); set admin.certFile and admin.keyFile",
			zap.String("addr", ac.GRPCAddr()))
	}
}

func (a *adminPlane) stop() {
	a.cancel()
	if a.grpc != nil {
		a.grpc.Stop()
	}
	if a.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		a.http.Shutdown(ctx)
		cancel()
	}
	a.wg.Wait()
}

// loadAuth reads the token files and the peer secret. Without tokens or a
// client CA the API is open; config validation allows that only on
// loopback or when insecure. The peer key is from admin.peerSecretFile,
// else derived from the first admin token, else nil (peers then use the
// client certificate, capped at the caller's role).
func loadAuth(ac config.Admin, log *zap.Logger) (*admin.Auth, *admin.PeerKey, error) {
	auth := &admin.Auth{Tokens: map[string]admin.Role{}, Names: map[string]string{}}
	var secret []byte
	for _, t := range ac.Tokens {
		tok, err := readSecret(t.File)
		if err != nil {
			return nil, nil, fmt.Errorf("admin token: %w", err)
		}
		role := admin.RoleRead
		if t.Role == "admin" {
			role = admin.RoleAdmin
			if secret == nil {
				secret = []byte(tok)
			}
		}
		auth.Tokens[tok], auth.Names[tok] = role, filepath.Base(t.File)
	}
	if ac.PeerSecretFile != "" {
		s, err := readSecret(ac.PeerSecretFile)
		if err != nil {
			return nil, nil, fmt.Errorf("admin peer secret: %w", err)
		}
		secret = []byte(s)
	} else if secret != nil {
		log.Info("admin peer key derived from the first admin token; set admin.peerSecretFile to rotate them apart")
	}
	auth.Open = len(auth.Tokens) == 0 && ac.ClientCAFile == ""
	if secret != nil {
		auth.Peer = admin.NewPeerKey(secret, ac.AdvertiseAddr())
	}
	return auth, auth.Peer, nil
}

// readSecret reads a token or secret file: at least 16 characters.
func readSecret(file string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", err
	}
	s := strings.TrimSpace(string(b))
	if len(s) < 16 {
		return "", fmt.Errorf("%s: at least 16 characters", file)
	}
	return s, nil
}

// loadAdminTLS returns the server's TLS config and the one peers dial with
// (the same certificate as a client certificate, trusting the client CA).
func loadAdminTLS(ac config.Admin) (server, peer *tls.Config, err error) {
	if ac.CertFile == "" {
		return nil, nil, nil
	}
	cert, err := tls.LoadX509KeyPair(ac.CertFile, ac.KeyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("admin tls: %w", err)
	}
	server = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	peer = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if ac.ClientCAFile != "" {
		pool, err := certPool(ac.ClientCAFile)
		if err != nil {
			return nil, nil, fmt.Errorf("admin client CA: %w", err)
		}
		// Tokens still work without a certificate; a certificate given must verify.
		server.ClientAuth, server.ClientCAs = tls.VerifyClientCertIfGiven, pool
		peer.RootCAs = pool
	}
	return server, peer, nil
}
