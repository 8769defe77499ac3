// Package config loads the gateway's YAML configuration file: the device
// listener, framing and key extraction, ring mode, the static backend list
// and the limits. Unknown fields are errors, so a typo fails at start-up
// instead of silently using a default; every address is checked at load,
// and a file with neither backends nor etcd is refused (ErrNoBackends).
// `devgate config check FILE` runs the same checks.
//
//	listen: 0.0.0.0:9000
//	frame: {lengthFieldOffset: 4, lengthFieldLength: 2, headerLength: 6, maxFrameLength: 4096}
//	key: {json: devid}
//	ring: {mode: consistent}
//	backends:
//	  - {id: netty-1, addr: 10.0.0.1:9000}
//	  - {id: netty-2, addr: 10.0.0.2:9000, weight: 200}
//	rehome: {enabled: true}            # move live devices instead of closing them (rehome.go)
//	rebalance: {auto: true, perSecond: 50}
package config

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// MaxFileSize bounds the config file we are willing to parse.
const MaxFileSize = 1 << 20

// Config is the whole file. Zero values mean the defaults listed per field.
type Config struct {
	Listen   string    `yaml:"listen"` // default 127.0.0.1:9000
	Frame    Frame     `yaml:"frame"`
	Key      Key       `yaml:"key"`
	Ring     Ring      `yaml:"ring"`
	Backends []Backend `yaml:"backends"` // static list; exclusive with etcd
	Etcd     *Etcd     `yaml:"etcd"`     // backends registered in etcd
	Gateway  Gateway   `yaml:"gateway"`
	Admin    Admin     `yaml:"admin"`
	Limits   Limits    `yaml:"limits"`
	// PROXY protocol from the L4 balancer and to backends.
	ProxyProtocol ProxyProtocol `yaml:"proxyProtocol"`
	TLS           *TLS          `yaml:"tls"` // TLS on the device listener
	// EventLoop copies proxied bytes on a few epoll loops (under 1 KB and
	// 2 fds per idle device) instead of two goroutines per connection
	// (about 17 KB and 6 fds, but splice for bulk). Default true; Linux
	// only; connections with TLS or an idle timeout use goroutines.
	EventLoop  *bool       `yaml:"eventLoop"`
	BackendTLS *BackendTLS `yaml:"backendTLS"` // TLS to backends
	Log        Log         `yaml:"log"`
	Rehome     Rehome      `yaml:"rehome"`    // move live devices instead of closing them
	Rebalance  Rebalance   `yaml:"rebalance"` // automatic rebalance after a backend joins
	// Admission guards backends against reconnect storms: login pacing
	// (admission.go), ejection and flapping devices (admission_eject.go).
	Admission   Admission    `yaml:"admission"`
	Dial        Dial         `yaml:"dial"`        // source addresses of backend dials (dial.go)
	EvictNotice *EvictNotice `yaml:"evictNotice"` // a frame written to a device before its eviction
}

// Frame mirrors Netty's LengthFieldBasedFrameDecoder parameters; unset
// fields take the defaults of the 6-byte header in DESIGN.md.
type Frame struct {
	LengthFieldOffset *int   `yaml:"lengthFieldOffset"` // default 4
	LengthFieldLength *int   `yaml:"lengthFieldLength"` // default 2
	LengthAdjustment  *int   `yaml:"lengthAdjustment"`  // default 0
	HeaderLength      *int   `yaml:"headerLength"`      // default 6
	ByteOrder         string `yaml:"byteOrder"`         // big (default) or little
	MaxFrameLength    *int   `yaml:"maxFrameLength"`    // default 4096
	TypeOffset        *int   `yaml:"typeOffset"`        // default 0
}

// Key says where the device id is. JSON and Bytes are exclusive; with
// neither, the JSON field "devid" is used.
type Key struct {
	JSON      string     `yaml:"json"`      // dotted path in the JSON body
	Bytes     *ByteRange `yaml:"bytes"`     // fixed range of the frame
	Types     []int      `yaml:"types"`     // only frames of these types carry the key
	MaxFrames int        `yaml:"maxFrames"` // frames read before giving up; default 8
	MaxBytes  int        `yaml:"maxBytes"`  // preread byte cap; default 16384
	MaxLength int        `yaml:"maxLength"` // key length cap; default 128
}

// ByteRange is a key at a fixed offset of the frame (header included).
type ByteRange struct {
	Offset int `yaml:"offset"`
	Length int `yaml:"length"`
}

// Ring selects the placement rule.
type Ring struct {
	Mode string `yaml:"mode"` // consistent (default) or crc32-mod
}

// Backend is one statically configured backend.
type Backend struct {
	ID     string            `yaml:"id"`
	Addr   string            `yaml:"addr"`
	Addrs  []string          `yaml:"addrs"`  // several ports: connections spread over them (dial.go)
	Weight uint32            `yaml:"weight"` // default 100
	Zone   string            `yaml:"zone"`
	Meta   map[string]string `yaml:"meta"`
}

// Etcd is where backends register and replicas agree (DESIGN.md, "etcd
// layout"). With it, the ring follows etcd instead of the static list.
type Etcd struct {
	Endpoints    []string `yaml:"endpoints"`    // required, e.g. https://etcd-0.etcd:2379
	Prefix       string   `yaml:"prefix"`       // default /devgate
	Cluster      string   `yaml:"cluster"`      // default "default"
	DialTimeout  Duration `yaml:"dialTimeout"`  // default 5s
	CAFile       string   `yaml:"caFile"`       // verifies the etcd server
	CertFile     string   `yaml:"certFile"`     // client certificate
	KeyFile      string   `yaml:"keyFile"`      // its key
	Username     string   `yaml:"username"`     // etcd auth
	PasswordFile string   `yaml:"passwordFile"` // file holding the password (not inline)
	LeaseTTL     Duration `yaml:"leaseTTL"`     // of the gateway's own registration; default 10s

	// A mass disappearance of backends is held back: when more than
	// panicThreshold of the weight leaves within panicWindow, the departed
	// stay in the ring for panicHold.
	PanicThreshold float64  `yaml:"panicThreshold"` // default 0.5; -1 disables
	PanicWindow    Duration `yaml:"panicWindow"`    // default 10s
	PanicHold      Duration `yaml:"panicHold"`      // default 60s
}

// Gateway identifies this replica in etcd.
type Gateway struct {
	ID string `yaml:"id"` // default: the host name (the pod name in Kubernetes)
}

// Admin is the admin API (gRPC) and the admin HTTP port (metrics, health).
type Admin struct {
	Listen       string       `yaml:"listen"`       // gRPC; default 127.0.0.1:9090; "off" disables
	HTTPListen   string       `yaml:"httpListen"`   // /metrics /healthz /readyz; default 127.0.0.1:9091
	Advertise    string       `yaml:"advertise"`    // address peers dial; default listen (required if listen has no host)
	CertFile     string       `yaml:"certFile"`     // TLS server certificate
	KeyFile      string       `yaml:"keyFile"`      // its key
	ClientCAFile string       `yaml:"clientCAFile"` // mTLS: verifies client certificates (OU devgate-read: read-only)
	Tokens       []AdminToken `yaml:"tokens"`       // bearer tokens
	Insecure     bool         `yaml:"insecure"`     // allow a non-loopback listener without auth, or pprof on one
	Pprof        bool         `yaml:"pprof"`        // /debug/pprof on the HTTP port
	// HTTPTLS serves the HTTP port with TLS too (certFile, keyFile and,
	// for client certificates on the dashboard and JSON API, clientCAFile);
	// probes and scrapes then use https.
	HTTPTLS bool `yaml:"httpTLS"`
	// PlaintextTokens allows tokens on a non-loopback listener without
	// TLS: they cross the network in clear (a pod network fenced by a
	// NetworkPolicy, say).
	PlaintextTokens bool `yaml:"plaintextTokens"`
	// PeerSecretFile holds a secret shared by the replicas that signs
	// their calls to each other (never sent itself). Default: derived
	// from the first admin token.
	PeerSecretFile string `yaml:"peerSecretFile"`
	// PeerNetworks are the CIDRs a replica dials peers at; an address
	// under gateways/ outside them is not dialled. Default: any.
	PeerNetworks []string `yaml:"peerNetworks"`
}

// AdminToken is a bearer token, read from a file, with its role.
type AdminToken struct {
	File string `yaml:"file"`
	Role string `yaml:"role"` // admin or read
}

// Limits bound what clients can make the gateway hold.
type Limits struct {
	MaxConnections int      `yaml:"maxConnections"` // default 100000; -1 for none
	PrereadTimeout Duration `yaml:"prereadTimeout"` // default 10s
	DialTimeout    Duration `yaml:"dialTimeout"`    // default 3s
	MaxTries       int      `yaml:"maxTries"`       // distinct owners dialled; default 3
	KeepAlive      Duration `yaml:"keepAlive"`      // TCP keepalive idle; default 30s
	DeviceCache    int      `yaml:"deviceCache"`    // devices remembered; default 100000

	MaxConnectionsPerIP int      `yaml:"maxConnectionsPerIP"` // default 10000; -1 for none
	AcceptRatePerIP     float64  `yaml:"acceptRatePerIP"`     // new connections/s per address; default 1000; -1 for none
	AcceptBurstPerIP    int      `yaml:"acceptBurstPerIP"`    // default 2x the rate
	IdleTimeout         Duration `yaml:"idleTimeout"`         // close proxied connections idle both ways; default none
	// A half-closed pair is closed once idle this long after the device's
	// FIN (clientFinTimeout) or the backend's (serverFinTimeout); default 30s.
	ClientFinTimeout Duration `yaml:"clientFinTimeout"`
	ServerFinTimeout Duration `yaml:"serverFinTimeout"`
	// File descriptors connections leave free for the admin port and etcd:
	// maxConnections is lowered at start to fit RLIMIT_NOFILE; default 128, -1 none.
	FDReserve int `yaml:"fdReserve"`
	// StrictFiles refuses to start when RLIMIT_NOFILE, raised to its hard
	// limit, cannot hold maxConnections; default false: a warning.
	StrictFiles bool `yaml:"strictFiles"`
}

// ProxyProtocol says who may send PROXY headers and whether to send one.
type ProxyProtocol struct {
	Trusted  []string `yaml:"trusted"`  // CIDRs of the balancers allowed to send v1/v2 headers
	Optional bool     `yaml:"optional"` // trusted peers may omit the header (health checks)
	SendV2   bool     `yaml:"sendV2"`   // send a v2 header with the device's address to backends
}

// TLS is the device listener's certificate, reloaded when the files change.
type TLS struct {
	CertFile string `yaml:"certFile"`
	KeyFile  string `yaml:"keyFile"`
}

// BackendTLS dials backends over TLS.
type BackendTLS struct {
	CAFile     string `yaml:"caFile"`     // verifies backends (default: system roots)
	ServerName string `yaml:"serverName"` // expected name (default: the backend's host)
	CertFile   string `yaml:"certFile"`   // client certificate, optional
	KeyFile    string `yaml:"keyFile"`
}

// TrustedPrefixes parses ProxyProtocol.Trusted.
func (p ProxyProtocol) TrustedPrefixes() ([]netip.Prefix, error) {
	return parsePrefixes("proxyProtocol.trusted", p.Trusted)
}

func parsePrefixes(field string, ss []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range ss {
		pf, err := netip.ParsePrefix(s)
		if err != nil {
			if ip, ierr := netip.ParseAddr(s); ierr == nil {
				pf = netip.PrefixFrom(ip, ip.BitLen())
			} else {
				return nil, fmt.Errorf("%s %q: %w", field, s, err)
			}
		}
		out = append(out, pf.Masked())
	}
	return out, nil
}

// Log configures zap.
type Log struct {
	Level  string `yaml:"level"`  // debug, info (default), warn, error
	Format string `yaml:"format"` // json (default) or console
	// Access: a JSON line per device connection that ends (logger
	// "access"; docs/access-log.md): all, errors (default: the ends that
	// are not a normal close) or off.
	Access string `yaml:"access"`
	// AccessSample keeps 1 in N lines of normal closes with access: all
	// (0 or 1: every line). Error lines are never sampled.
	AccessSample int `yaml:"accessSample"`
	// AccessErrorsPerSecond caps the error lines of one reason within a
	// second (default 100; -1: no cap); the rest are counted and summed up.
	AccessErrorsPerSecond int `yaml:"accessErrorsPerSecond"`
}

// DefaultAccessLog is log.access when unset: errors only, so a fleet of
// devices that reconnect all day does not fill the log.
const DefaultAccessLog = "errors"

// AccessOr is log.access or its default.
func (l Log) AccessOr() string {
	if l.Access == "" {
		return DefaultAccessLog
	}
	return l.Access
}

// Duration is a time.Duration written as "10s" in YAML.
type Duration time.Duration

// UnmarshalYAML parses Go duration strings.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	if v < 0 {
		return fmt.Errorf("line %d: negative duration %s", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// Load reads and validates the file at path.
func Load(path string) (*Config, error) { return LoadWith(path, nil) }

// LoadWith is Load with override applied between decoding and validation,
// for command-line flags that complete the file (serve --admin-advertise).
func LoadWith(path string, override func(*Config) error) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(ioLimit(f)); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if buf.Len() > MaxFileSize {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, MaxFileSize)
	}
	c, err := ParseWith(buf.Bytes(), override)
	if err != nil {
		return nil, inFile(path, err)
	}
	return c, nil
}

// Parse decodes and validates a config document.
func Parse(data []byte) (*Config, error) { return ParseWith(data, nil) }

// ParseWith is Parse with override applied before validation.
func ParseWith(data []byte, override func(*Config) error) (*Config, error) {
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("config larger than %d bytes", MaxFileSize)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var c Config
	if err := dec.Decode(&c); err != nil && !errors.Is(err, errEOF) {
		return nil, decodeError(err)
	}
	if override != nil {
		if err := override(&c); err != nil {
			return nil, err
		}
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Validate checks every section, so that serve fails before listening.
func (c *Config) Validate() error {
	if c.Listen != "" {
		if err := checkListen("listen", c.Listen); err != nil {
			return err
		}
	}
	if _, err := c.Matcher(); err != nil {
		return err
	}
	if _, err := c.BuildRing(); err != nil {
		return err
	}
	if err := c.Etcd.validate(len(c.Backends)); err != nil {
		return err
	}
	if err := c.Admin.validate(); err != nil {
		return err
	}
	if _, err := c.ProxyProtocol.TrustedPrefixes(); err != nil {
		return err
	}
	if c.ProxyProtocol.Optional && len(c.ProxyProtocol.Trusted) == 0 {
		return errors.New("proxyProtocol.optional needs trusted networks")
	}
	if c.TLS != nil && (c.TLS.CertFile == "" || c.TLS.KeyFile == "") {
		return errors.New("tls: certFile and keyFile are required")
	}
	if b := c.BackendTLS; b != nil && (b.CertFile == "") != (b.KeyFile == "") {
		return errors.New("backendTLS: certFile and keyFile go together")
	}
	if l := c.Limits; l.MaxConnectionsPerIP < -1 || l.AcceptRatePerIP < -1 || l.AcceptBurstPerIP < 0 {
		return errors.New("limits: maxConnectionsPerIP and acceptRatePerIP take -1 (none) or more; acceptBurstPerIP 0 or more")
	}
	if c.Limits.MaxConnections < -1 || c.Limits.MaxTries < 0 || c.Limits.DeviceCache < 0 {
		return errors.New("limits: maxConnections, maxTries and deviceCache must not be negative (maxConnections -1 means none)")
	}
	switch c.Log.Level {
	case "", "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log.level %q: want debug, info, warn or error", c.Log.Level)
	}
	switch c.Log.Format {
	case "", "json", "console":
	default:
		return fmt.Errorf("log.format %q: want json or console", c.Log.Format)
	}
	switch c.Log.Access {
	case "", "all", "errors", "off":
	default:
		return fmt.Errorf("log.access %q: want all, errors or off", c.Log.Access)
	}
	if c.Log.AccessSample < 0 {
		return fmt.Errorf("log.accessSample %d: want 0 or more (keep 1 in N)", c.Log.AccessSample)
	}
	if c.Log.AccessErrorsPerSecond < -1 {
		return fmt.Errorf("log.accessErrorsPerSecond %d: want -1 (no cap), 0 (default 100) or more", c.Log.AccessErrorsPerSecond)
	}
	if err := c.validateRehome(); err != nil {
		return err
	}
	if err := c.validateAdmission(); err != nil {
		return err
	}
	if err := c.validateGuard(); err != nil {
		return err
	}
	if err := c.validateDial(); err != nil {
		return err
	}
	if c.Etcd == nil && len(c.Backends) == 0 {
		return ErrNoBackends
	}
	return nil
}

func (e *Etcd) validate(static int) error {
	if e == nil {
		return nil
	}
	switch {
	case len(e.Endpoints) == 0:
		return errors.New("etcd.endpoints: at least one is required")
	case static > 0:
		return errors.New("backends and etcd: choose one source of backends")
	case e.PanicThreshold < -1 || e.PanicThreshold > 1:
		return fmt.Errorf("etcd.panicThreshold %v: want 0..1, or -1 to disable", e.PanicThreshold)
	case (e.CertFile == "") != (e.KeyFile == ""):
		return errors.New("etcd: certFile and keyFile go together")
	case e.PasswordFile != "" && e.Username == "":
		return errors.New("etcd: passwordFile needs username")
	}
	for i, ep := range e.Endpoints {
		if err := checkEndpoint(fmt.Sprintf("etcd.endpoints[%d]", i), ep); err != nil {
			return err
		}
	}
	return nil
}

func (a *Admin) validate() error {
	if _, err := a.PeerPrefixes(); err != nil {
		return err
	}
	if a.Pprof && !a.Insecure {
		host, _, err := net.SplitHostPort(a.HTTPAddr())
		if err != nil {
			return fmt.Errorf("admin.httpListen: %w", err)
		}
		if !isLoopback(host) {
			return fmt.Errorf("admin.pprof on admin.httpListen %s, which is not loopback: profiles and heap dumps would be served to anyone, without authentication; listen on loopback (kubectl port-forward), or set admin.insecure: true", a.HTTPAddr())
		}
	}
	for _, t := range a.Tokens {
		if t.File == "" || (t.Role != "admin" && t.Role != "read") {
			return fmt.Errorf("admin.tokens: each needs a file and role admin or read (got %+v)", t)
		}
	}
	if (a.CertFile == "") != (a.KeyFile == "") {
		return errors.New("admin: certFile and keyFile go together")
	}
	if a.ClientCAFile != "" && a.CertFile == "" {
		return errors.New("admin: clientCAFile needs certFile and keyFile (mTLS)")
	}
	if a.HTTPTLS && a.CertFile == "" {
		return errors.New("admin: httpTLS needs certFile and keyFile")
	}
	if err := checkListen("admin.httpListen", a.HTTPAddr()); err != nil {
		return err
	}
	addr := a.GRPCAddr()
	if addr == "off" {
		return nil
	}
	if err := checkListen("admin.listen", addr); err != nil {
		return err
	}
	if a.Advertise != "" {
		if err := checkDial("admin.advertise", a.Advertise); err != nil {
			return err
		}
	}
	host, _, _ := net.SplitHostPort(addr)
	loopback := isLoopback(host)
	if !loopback && len(a.Tokens) == 0 && a.ClientCAFile == "" && !a.Insecure {
		return fmt.Errorf("admin.listen %s is not loopback: set admin.tokens or admin.clientCAFile, or admin.insecure: true", addr)
	}
	if !loopback && len(a.Tokens) > 0 && a.CertFile == "" && !a.PlaintextTokens {
		return fmt.Errorf("admin.listen %s is not loopback and has no TLS: admin tokens would cross the network in clear; set admin.certFile and admin.keyFile, or admin.plaintextTokens: true on a network you trust", addr)
	}
	ip := net.ParseIP(host)
	if (host == "" || ip != nil && ip.IsUnspecified()) && a.Advertise == "" {
		return fmt.Errorf("admin.listen %s has no host peers can dial: set admin.advertise", addr)
	}
	return nil
}

func isLoopback(host string) bool {
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback() || host == "localhost"
}

// PeerPrefixes parses PeerNetworks (a bare address is a /32 or /128).
func (a *Admin) PeerPrefixes() ([]netip.Prefix, error) {
	return parsePrefixes("admin.peerNetworks", a.PeerNetworks)
}

// SetAdvertise overrides Advertise: "" leaves it, host:port is used as it
// is, and a bare host (IPv4 or IPv6, as a pod IP comes) takes the port of
// the admin listener.
func (a *Admin) SetAdvertise(s string) error {
	if s == "" {
		return nil
	}
	if _, _, err := net.SplitHostPort(s); err == nil {
		a.Advertise = s
		return nil
	}
	if net.ParseIP(s) == nil && strings.ContainsAny(s, ":[]") {
		return fmt.Errorf("admin advertise %q: want host or host:port", s)
	}
	_, port, err := net.SplitHostPort(a.GRPCAddr())
	if err != nil {
		return fmt.Errorf("admin advertise: admin.listen: %w", err)
	}
	a.Advertise = net.JoinHostPort(s, port)
	return nil
}

// GRPCAddr is the admin gRPC listen address or its default.
func (a *Admin) GRPCAddr() string {
	if a.Listen == "" {
		return "127.0.0.1:9090"
	}
	return a.Listen
}

// HTTPAddr is the admin HTTP listen address or its default.
func (a *Admin) HTTPAddr() string {
	if a.HTTPListen == "" {
		return "127.0.0.1:9091"
	}
	return a.HTTPListen
}

// AdvertiseAddr is the address peers dial.
func (a *Admin) AdvertiseAddr() string {
	if a.Advertise != "" {
		return a.Advertise
	}
	return a.GRPCAddr()
}

// EventLoopOn is EventLoop or its default (on).
func (c *Config) EventLoopOn() bool { return c.EventLoop == nil || *c.EventLoop }

// ListenAddr is Listen or its default.
func (c *Config) ListenAddr() string {
	if c.Listen == "" {
		return "127.0.0.1:9000"
	}
	return c.Listen
}
