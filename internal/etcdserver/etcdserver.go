// Package etcdserver runs a single-member etcd inside the process, for
// `devgate dev` and for tests that need a real etcd. It is not a production
// etcd: run a cluster for that (deploy/k8s has one).
package etcdserver

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Config of an embedded member. Zero addresses pick free loopback ports.
type Config struct {
	Dir        string // data directory; required
	ClientAddr string // host:port for clients; default a free 127.0.0.1 port
	PeerAddr   string // host:port for peers; default a free 127.0.0.1 port
	Name       string // member name; default "devgate"
	LogLevel   string // etcd's own log level; default "fatal"

	// Quick shortens heartbeats and elections (10/100 ms): a single member
	// then starts and stops in well under a second, which tests want.
	Quick bool

	// ProgressNotifyInterval makes the server send watch progress
	// notifications this often; zero keeps etcd's default (10 min).
	ProgressNotifyInterval time.Duration
}

// Server is a running member.
type Server struct {
	cfg Config
	e   *embed.Etcd
}

// Start starts a member and waits until it serves clients.
func Start(cfg Config) (*Server, error) {
	if cfg.Dir == "" {
		return nil, errors.New("etcdserver: Dir is required")
	}
	if cfg.Name == "" {
		cfg.Name = "devgate"
	}
	if cfg.LogLevel == "" {
		cfg.LogLevel = "fatal" // its errors on a normal Close are noise
	}
	// A free port picked here may be taken (an outgoing connection's
	// ephemeral port) before etcd binds it: pick again, a few times.
	pickClient, pickPeer := cfg.ClientAddr == "", cfg.PeerAddr == ""
	for try := 1; ; try++ {
		var err error
		if pickClient {
			if cfg.ClientAddr, err = FreeAddr(); err != nil {
				return nil, err
			}
		}
		if pickPeer {
			if cfg.PeerAddr, err = FreeAddr(); err != nil {
				return nil, err
			}
		}
		s := &Server{cfg: cfg}
		err = s.start()
		inUse := errors.Is(err, syscall.EADDRINUSE) || err != nil && strings.Contains(err.Error(), "address already in use")
		if err == nil || try == 3 || !(pickClient || pickPeer) || !inUse {
			return s, err
		}
		os.RemoveAll(cfg.Dir) // a half-started member may have left data
		if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
			return nil, err
		}
	}
}

func (s *Server) start() error {
	c := embed.NewConfig()
	c.Name = s.cfg.Name
	c.Dir = s.cfg.Dir
	c.LogLevel = s.cfg.LogLevel
	c.ZapLoggerBuilder = embed.NewZapLoggerBuilder(mustLogger(s.cfg.LogLevel))
	cu := url.URL{Scheme: "http", Host: s.cfg.ClientAddr}
	pu := url.URL{Scheme: "http", Host: s.cfg.PeerAddr}
	c.ListenClientUrls, c.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
	c.ListenPeerUrls, c.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
	c.InitialCluster = c.InitialClusterFromName(c.Name)
	if s.cfg.Quick {
		c.TickMs, c.ElectionMs = 10, 100
	}
	if s.cfg.ProgressNotifyInterval > 0 {
		c.WatchProgressNotifyInterval = s.cfg.ProgressNotifyInterval
	}
	e, err := embed.StartEtcd(c)
	if err != nil {
		return fmt.Errorf("start etcd: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		e.Close()
		return errors.New("etcd did not become ready in 30s")
	case err := <-e.Err():
		e.Close()
		return fmt.Errorf("etcd: %w", err)
	}
	s.e = e
	return nil
}

// Endpoint is the client URL, e.g. http://127.0.0.1:2379.
func (s *Server) Endpoint() string { return "http://" + s.cfg.ClientAddr }

// ClientAddr is the host:port clients connect to.
func (s *Server) ClientAddr() string { return s.cfg.ClientAddr }

// Dir is the data directory.
func (s *Server) Dir() string { return s.cfg.Dir }

// Stop stops the member; its data stays in Dir.
func (s *Server) Stop() {
	if s.e != nil {
		s.e.Close()
		s.e = nil
	}
}

// Restart starts the stopped member again on the same addresses and data.
func (s *Server) Restart() error {
	s.Stop()
	return s.start()
}

// FreeAddr returns a loopback address with a port that was free a moment ago.
func FreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func mustLogger(level string) *zap.Logger {
	cfg := zap.NewProductionConfig()
	if lvl, err := zap.ParseAtomicLevel(level); err == nil {
		cfg.Level = lvl
	}
	l, err := cfg.Build()
	if err != nil {
		return zap.NewNop()
	}
	return l
}
