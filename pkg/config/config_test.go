package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// oneBackend makes a document that tests another section loadable.
const oneBackend = "backends: [{id: a, addr: '127.0.0.1:1'}]\n"

func TestLoadExample(t *testing.T) {
	c, err := Load(filepath.Join("..", "..", "deploy", "devgate.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if got := len(c.Backends); got != 3 {
		t.Fatalf("backends = %d, want 3", got)
	}
	if time.Duration(c.Limits.PrereadTimeout) != 10*time.Second {
		t.Fatalf("prereadTimeout = %v", time.Duration(c.Limits.PrereadTimeout))
	}
	m, err := c.Matcher()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.KeyTypes) != 1 || m.KeyTypes[0] != 1 {
		t.Fatalf("key types = %v", m.KeyTypes)
	}
	r, err := c.BuildRing()
	if err != nil {
		t.Fatal(err)
	}
	if r.Len() != 3 {
		t.Fatalf("ring has %d backends", r.Len())
	}
}

func TestDefaults(t *testing.T) {
	c, err := Parse([]byte("backends: [{id: a, addr: '127.0.0.1:1'}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.ListenAddr() != "127.0.0.1:9000" {
		t.Fatalf("listen = %s", c.ListenAddr())
	}
	fc, err := c.Frame.FrameConfig()
	if err != nil {
		t.Fatal(err)
	}
	if fc.LengthFieldOffset != 4 || fc.LengthFieldLength != 2 || fc.HeaderLength != 6 || fc.LittleEndian {
		t.Fatalf("frame defaults = %+v", fc)
	}
	// An explicit zero is kept, not replaced by the default.
	c, err = Parse([]byte(oneBackend + "frame: {lengthFieldOffset: 0, lengthFieldLength: 4, headerLength: 4}\n"))
	if err != nil {
		t.Fatal(err)
	}
	fc, _ = c.Frame.FrameConfig()
	if fc.LengthFieldOffset != 0 || fc.LengthFieldLength != 4 {
		t.Fatalf("explicit frame = %+v", fc)
	}
}

func TestErrors(t *testing.T) {
	cases := []struct{ name, doc, want string }{
		{"unknown field", "listn: x\n", `unknown field "listn"`},
		{"bad listen", "listen: nope\n", "listen"},
		{"bad byte order", "frame: {byteOrder: middle}\n", "byteOrder"},
		{"bad length field", "frame: {lengthFieldLength: 5}\n", "frame"},
		{"json and bytes", "key: {json: devid, bytes: {offset: 6, length: 8}}\n", "not both"},
		{"bad type", "key: {types: [300]}\n", "not a byte"},
		{"bad mode", "ring: {mode: modulo}\n", "ring.mode"},
		{"missing addr", "backends: [{id: a}]\n", "addr"},
		{"duplicate id", "backends: [{id: a, addr: 'h:1'}, {id: a, addr: 'h:2'}]\n", "backends"},
		{"bad duration", "limits: {prereadTimeout: soon}\n", "duration"},
		{"negative limit", "limits: {maxTries: -2}\n", "negative"},
		{"bad level", "log: {level: loud}\n", "log.level"},
		{"bad access log", "log: {access: some}\n", "log.access"},
		{"negative access sample", "log: {access: all, accessSample: -1}\n", "log.accessSample"},
		{"access errors per second below -1", "log: {accessErrorsPerSecond: -2}\n", "log.accessErrorsPerSecond"},
		{"not yaml", "{{{", "parse"},
		{"admin open to the world", "admin: {listen: '0.0.0.0:9090', advertise: 'g:9090'}\n", "not loopback"},
		{"admin no advertise", "admin: {listen: '0.0.0.0:9090', insecure: true}\n", "advertise"},
		{"admin bad role", "admin: {tokens: [{file: t, role: root}]}\n", "role"},
		{"admin ca without cert", "admin: {clientCAFile: ca.pem}\n", "mTLS"},
		{"admin tokens in clear", "admin: {listen: '0.0.0.0:9090', advertise: 'g:9090', tokens: [{file: /t, role: admin}]}\n", "in clear"},
		{"admin pprof to the world", "admin: {httpListen: '0.0.0.0:9091', pprof: true}\n", "admin.pprof"},
		{"admin bad peer network", "admin: {peerNetworks: [10.0.0.0/40]}\n", "peerNetworks"},
		{"bad cidr", "proxyProtocol: {trusted: [10.0.0.0/33]}\n", "trusted"},
		{"optional without trusted", "proxyProtocol: {optional: true}\n", "trusted"},
		{"tls without key", "tls: {certFile: c.pem}\n", "tls"},
		{"bad per-ip", "limits: {maxConnectionsPerIP: -5}\n", "maxConnectionsPerIP"},
		{"etcd without endpoints", "etcd: {prefix: /x}\n", "etcd.endpoints"},
		{"etcd and static", "etcd: {endpoints: ['http://e:2379']}\nbackends: [{id: a, addr: 'h:1'}]\n", "choose one"},
		{"etcd bad scheme", "etcd: {endpoints: ['e:2379']}\n", "http://"},
		{"etcd cert without key", "etcd: {endpoints: ['https://e:2379'], certFile: c.pem}\n", "keyFile"},
		{"etcd panic", "etcd: {endpoints: ['http://e:2379'], panicThreshold: 2}\n", "panicThreshold"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.doc))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

func TestAccessLogDefault(t *testing.T) {
	const static = "backends: [{id: a, addr: 'h:1'}]\n"
	c, err := Parse([]byte(static + "log: {accessSample: 10}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Log.AccessOr() != "errors" || c.Log.AccessSample != 10 {
		t.Fatalf("log = %+v; want access errors by default", c.Log)
	}
	if c, err = Parse([]byte(static + "log: {access: all}\n")); err != nil || c.Log.AccessOr() != "all" {
		t.Fatalf("log = %+v, %v", c, err)
	}
}

func TestEtcdSection(t *testing.T) {
	c, err := Parse([]byte("etcd:\n  endpoints: [https://etcd-0:2379, https://etcd-1:2379]\n  cluster: prod\n  panicHold: 2m\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Etcd.Endpoints) != 2 || c.Etcd.Cluster != "prod" || time.Duration(c.Etcd.PanicHold) != 2*time.Minute {
		t.Fatalf("etcd = %+v", c.Etcd)
	}
}

func TestAdminSection(t *testing.T) {
	for _, doc := range []string{
		"admin: {listen: '0.0.0.0:9090', advertise: 'g:9090', tokens: [{file: /t, role: admin}], certFile: c, keyFile: k}\n",
		"admin: {listen: '0.0.0.0:9090', advertise: 'g:9090', tokens: [{file: /t, role: admin}], plaintextTokens: true}\n",
		"admin: {listen: '0.0.0.0:9090', advertise: 'g:9090', certFile: c, keyFile: k, clientCAFile: ca}\n",
		"admin: {httpListen: '0.0.0.0:9091', pprof: true, insecure: true, peerNetworks: [10.0.0.0/8, 127.0.0.1]}\n",
		"admin: {httpListen: '127.0.0.1:9091', pprof: true}\n",
		"admin: {listen: '0.0.0.0:9090', advertise: 'g:9090', insecure: true}\n",
		"admin: {listen: '127.0.0.1:9090'}\n",
		"admin: {listen: 'off'}\n",
		"admin: {listen: '127.0.0.1:9090', certFile: c, keyFile: k, httpTLS: true}\n",
	} {
		if _, err := Parse([]byte(oneBackend + doc)); err != nil {
			t.Errorf("%s: %v", doc, err)
		}
	}
	if _, err := Parse([]byte(oneBackend + "admin: {httpTLS: true}\n")); err == nil || !strings.Contains(err.Error(), "httpTLS needs certFile") {
		t.Errorf("httpTLS without a certificate: %v", err)
	}
}

func TestHardeningSection(t *testing.T) {
	c, err := Parse([]byte(oneBackend + "proxyProtocol: {trusted: [10.0.0.0/8, 192.168.1.7], sendV2: true}\nlimits: {maxConnectionsPerIP: 100, acceptRatePerIP: 20, idleTimeout: 5m}\n"))
	if err != nil {
		t.Fatal(err)
	}
	ps, _ := c.ProxyProtocol.TrustedPrefixes()
	if len(ps) != 2 || ps[1].String() != "192.168.1.7/32" || !c.ProxyProtocol.SendV2 || time.Duration(c.Limits.IdleTimeout) != 5*time.Minute {
		t.Fatalf("parsed %+v %v", c, ps)
	}
}

func TestFinTimeouts(t *testing.T) {
	c, err := Parse([]byte(oneBackend + "limits: {clientFinTimeout: 5s, serverFinTimeout: 1m, fdReserve: 64, strictFiles: true}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if time.Duration(c.Limits.ClientFinTimeout) != 5*time.Second || time.Duration(c.Limits.ServerFinTimeout) != time.Minute ||
		c.Limits.FDReserve != 64 || !c.Limits.StrictFiles {
		t.Fatalf("parsed %+v", c.Limits)
	}
}

func TestSetAdvertise(t *testing.T) {
	doc := []byte(oneBackend + "admin: {listen: '0.0.0.0:9090'}\n")
	if _, err := Parse(doc); err == nil {
		t.Fatal("0.0.0.0 without advertise accepted")
	}
	for in, want := range map[string]string{"10.1.2.3": "10.1.2.3:9090", "fd00::1": "[fd00::1]:9090", "gw.ns.svc:7000": "gw.ns.svc:7000"} {
		c, err := ParseWith(append(doc, "  \n"...), func(c *Config) error { c.Admin.Insecure = true; return c.Admin.SetAdvertise(in) })
		if err != nil || c.Admin.AdvertiseAddr() != want {
			t.Errorf("SetAdvertise(%q) = %q, %v; want %q", in, c.Admin.AdvertiseAddr(), err, want)
		}
	}
}

func TestLoadTooLarge(t *testing.T) {
	path := filepath.Join(t.TempDir(), "big.yaml")
	if err := os.WriteFile(path, []byte("#"+strings.Repeat("x", MaxFileSize)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("err = %v", err)
	}
}

func FuzzParse(f *testing.F) {
	if b, err := os.ReadFile(filepath.Join("..", "..", "deploy", "devgate.example.yaml")); err == nil {
		f.Add(b)
	}
	f.Add([]byte("backends: [{id: a, addr: 'h:1', weight: 3}]\nkey: {types: [1, 2]}\n"))
	f.Add([]byte("backend: []\nadmin: {httpListn: x, listen: '1:99999'}\netcd: {endpoints: ['http://e:1/x']}\n"))
	f.Add([]byte("backends: [{id: a, addr: 'h:1'}]\nrehome: {enabled: true, maxBuffered: 4096, replyFrame: {lengthFieldLength: 4}}\nrebalance: {perSecond: 3}\n"))
	f.Add([]byte("backends: [{id: a, addrs: ['10.0.0.1:1', '10.0.0.1:2']}]\ndial: {sourceAddrs: [10.0.1.1, 10.0.1.2]}\n"))
	f.Fuzz(func(t *testing.T, doc []byte) {
		c, err := Parse(doc)
		if err != nil {
			return
		}
		if _, err := c.Dial.Sources(); err != nil {
			t.Fatalf("parsed config has bad dial.sourceAddrs: %v", err)
		}
		// Whatever parsed must also build.
		if _, err := c.Matcher(); err != nil {
			t.Fatalf("parsed config has a bad matcher: %v", err)
		}
		if _, err := c.BuildRing(); err != nil {
			t.Fatalf("parsed config has a bad ring: %v", err)
		}
		if _, err := c.ReplyFrameConfig(); err != nil {
			t.Fatalf("parsed config has a bad reply framing: %v", err)
		}
	})
}
