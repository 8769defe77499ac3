package registry

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// How the client reconnects: gRPC's default backoff grows to 120s, so after
// an outage of a minute a client found etcd back only seconds later, and
// registrars lost their leases meanwhile. Capped at a second, with jitter.
const (
	reconnectBaseDelay = 100 * time.Millisecond
	reconnectMaxDelay  = time.Second
	// keepAliveTime is gRPC's floor for client pings; keepAliveTimeout then
	// closes a connection that stopped answering (no FIN) a few seconds later.
	keepAliveTime    = 10 * time.Second
	keepAliveTimeout = 3 * time.Second
)

// ClientConfig is how devgate reaches etcd: endpoints, TLS and auth. The
// zero value of each optional field leaves that feature off.
type ClientConfig struct {
	Endpoints []string // e.g. http://127.0.0.1:2379; https:// ones use TLS

	// TLS, PEM files. CACert verifies the server (if empty and TLS is on,
	// the system roots do); Cert and Key are the client certificate.
	CACert, Cert, Key string

	Username, Password string // etcd auth; empty Username disables it

	DialTimeout time.Duration // if zero, 5s
}

// New makes a client. Only the etcd client's errors reach logger (nil
// discards them): it warns on every retry during an outage, and callers log
// the outcome themselves.
func (c ClientConfig) New(logger *zap.Logger) (*clientv3.Client, error) {
	cfg, err := c.config(logger)
	if err != nil {
		return nil, err
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcd client %s: %w", strings.Join(c.Endpoints, ","), err)
	}
	return cli, nil
}

func (c ClientConfig) config(logger *zap.Logger) (clientv3.Config, error) {
	var eps []string
	for _, e := range c.Endpoints {
		if e = strings.TrimSpace(e); e != "" {
			eps = append(eps, e)
		}
	}
	if len(eps) == 0 {
		return clientv3.Config{}, errors.New("etcd: no endpoints")
	}
	if logger == nil {
		logger = zap.NewNop()
	}
	cfg := clientv3.Config{
		Endpoints:   eps,
		DialTimeout: c.DialTimeout,
		// gRPC pings notice a dead connection that never got a FIN (APISIX #9951).
		DialKeepAliveTime:    keepAliveTime,
		DialKeepAliveTimeout: keepAliveTimeout,
		Username:             c.Username,
		Password:             c.Password,
		Logger:               logger.Named("etcd").WithOptions(zap.IncreaseLevel(zapcore.ErrorLevel)),
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	cfg.DialOptions = []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
		Backoff: backoff.Config{BaseDelay: reconnectBaseDelay, Multiplier: 1.6, Jitter: 0.2, MaxDelay: reconnectMaxDelay},
		// A connection attempt to a blackholed address gives up this soon.
		MinConnectTimeout: cfg.DialTimeout,
	})}
	if c.Password != "" && c.Username == "" {
		return cfg, errors.New("etcd: password without user")
	}
	tlsOn := c.CACert != "" || c.Cert != "" || c.Key != ""
	for _, e := range eps {
		tlsOn = tlsOn || strings.HasPrefix(e, "https://") || strings.HasPrefix(e, "unixs://")
	}
	if !tlsOn {
		return cfg, nil
	}
	t := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.CACert != "" {
		pem, err := os.ReadFile(c.CACert)
		if err != nil {
			return cfg, fmt.Errorf("etcd CA: %w", err)
		}
		t.RootCAs = x509.NewCertPool()
		if !t.RootCAs.AppendCertsFromPEM(pem) {
			return cfg, fmt.Errorf("etcd CA %s: no PEM certificate", c.CACert)
		}
	}
	if (c.Cert == "") != (c.Key == "") {
		return cfg, errors.New("etcd: client cert and key go together")
	}
	if c.Cert != "" {
		kp, err := tls.LoadX509KeyPair(c.Cert, c.Key)
		if err != nil {
			return cfg, fmt.Errorf("etcd client cert: %w", err)
		}
		t.Certificates = []tls.Certificate{kp}
	}
	cfg.TLS = t
	return cfg, nil
}
