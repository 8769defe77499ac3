package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Each message names the file, the key and what is wrong, in the words an
// operator reads in the file.
func TestLoadMessages(t *testing.T) {
	const ok = "backends: [{id: b1, addr: '10.0.0.1:9000'}]\n"
	for _, tc := range []struct {
		name, doc, want string
	}{
		{"listen port out of range", ok + "listen: 127.0.0.1:99999\n",
			`devgate.yaml: listen: "127.0.0.1:99999": port 99999 out of range 0..65535`},
		{"listen without port", ok + "listen: 127.0.0.1\n",
			`devgate.yaml: listen: "127.0.0.1": missing port`},
		{"listen port name", ok + "listen: ':http'\n",
			`devgate.yaml: listen: ":http": port "http" is not a number`},
		{"http listen garbage", ok + "admin: {httpListen: garbage}\n",
			`devgate.yaml: admin.httpListen: "garbage": missing port`},
		{"http listen too many colons", ok + "admin: {httpListen: '1:2:3'}\n",
			`devgate.yaml: admin.httpListen: "1:2:3": too many colons`},
		{"admin listen port", ok + "admin: {listen: '127.0.0.1:70000'}\n",
			`devgate.yaml: admin.listen: "127.0.0.1:70000": port 70000 out of range 0..65535`},
		{"admin advertise", ok + "admin: {listen: '0.0.0.0:9090', insecure: true, advertise: 'gw-1'}\n",
			`devgate.yaml: admin.advertise: "gw-1": missing port`},
		{"backend addr port", "backends: [{id: b1, addr: '10.0.0.1:9000'}, {id: b2, addr: '10.0.0.2:0'}]\n",
			`devgate.yaml: backends[1].addr: "10.0.0.2:0": port 0 cannot be dialled`},
		{"backend addr host", "backends: [{id: b1, addr: ':9000'}]\n",
			`devgate.yaml: backends[0].addr: ":9000": missing host`},
		{"etcd endpoint port", "etcd: {endpoints: ['http://e0:2379', 'https://e1:123456']}\n",
			`devgate.yaml: etcd.endpoints[1]: "https://e1:123456": port 123456 out of range 0..65535`},
		{"etcd endpoint no port", "etcd: {endpoints: ['http://e0']}\n",
			`devgate.yaml: etcd.endpoints[0]: "http://e0": missing port`},
		{"etcd endpoint scheme", "etcd: {endpoints: ['e0:2379']}\n",
			`devgate.yaml: etcd.endpoints[0]: "e0:2379": must start with http:// or https://`},
		{"etcd endpoint path", "etcd: {endpoints: ['http://e0:2379/v3']}\n",
			`devgate.yaml: etcd.endpoints[0]: "http://e0:2379/v3": want scheme://host:port only`},
		{"unknown top-level field", "backend: [{id: b1, addr: '10.0.0.1:9000'}]\n",
			`devgate.yaml: line 1: unknown field "backend" (did you mean "backends"?)`},
		{"unknown nested field", ok + "admin:\n  httpListn: 127.0.0.1:9091\n",
			`devgate.yaml: line 3: unknown field "httpListn" in admin (did you mean "httpListen"?)`},
		{"unknown field in a list", "backends: [{id: b1, adr: '10.0.0.1:9000'}]\n",
			`devgate.yaml: line 1: unknown field "adr" in backends[] (did you mean "addr"?)`},
		{"unknown field, case", ok + "limits: {maxconnections: 5}\n",
			`devgate.yaml: line 2: unknown field "maxconnections" in limits (did you mean "maxConnections"?)`},
		{"unknown field, nothing close", ok + "colour: blue\n",
			`devgate.yaml: line 2: unknown field "colour"`},
		{"two unknown fields", "listn: x\nbackend: []\n",
			"devgate.yaml: line 1: unknown field \"listn\" (did you mean \"listen\"?)\n" +
				"devgate.yaml: line 2: unknown field \"backend\" (did you mean \"backends\"?)"},
		{"nothing to route to", "listen: 127.0.0.1:9000\n",
			"devgate.yaml: " + ErrNoBackends.Error()},
		{"empty file", "",
			"devgate.yaml: " + ErrNoBackends.Error()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "devgate.yaml")
			if err := os.WriteFile(path, []byte(tc.doc), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Load(path)
			if err == nil {
				t.Fatalf("loaded; want %s", tc.want)
			}
			if got := strings.ReplaceAll(err.Error(), path, "devgate.yaml"); got != tc.want {
				t.Fatalf("error:\n%s\nwant:\n%s", got, tc.want)
			}
		})
	}
}

func TestErrorTypes(t *testing.T) {
	_, err := Parse([]byte("listen: x\n"))
	var ae *AddrError
	if !errors.As(err, &ae) || ae.Key != "listen" || ae.Addr != "x" {
		t.Fatalf("err %v: want an AddrError for listen", err)
	}
	_, err = Parse([]byte("backend: []\n"))
	var ue *UnknownFieldError
	if !errors.As(err, &ue) || ue.Field != "backend" || ue.Suggestion != "backends" {
		t.Fatalf("err %v: want an UnknownFieldError", err)
	}
	if _, err = Parse(nil); !errors.Is(err, ErrNoBackends) {
		t.Fatalf("err %v: want ErrNoBackends", err)
	}
}

// Addresses that must keep loading.
func TestAddressesAccepted(t *testing.T) {
	for _, doc := range []string{
		"listen: ':9000'\nbackends: [{id: b, addr: 'netty-1.ns.svc:9000'}]\n",
		"listen: '[::1]:0'\nbackends: [{id: b, addr: '[fd00::1]:65535'}]\n",
		"admin: {listen: off, httpListen: '0.0.0.0:9091'}\nbackends: [{id: b, addr: 'h:1'}]\n",
		"etcd: {endpoints: ['https://etcd-0.etcd:2379/', 'http://[::1]:2379']}\n",
	} {
		if _, err := Parse([]byte(doc)); err != nil {
			t.Errorf("%q: %v", doc, err)
		}
	}
}

func TestEditDistance(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		d    int
	}{{"", "", 0}, {"backend", "backends", 1}, {"drian", "drain", 2}, {"kitten", "sitting", 3}, {"", "abc", 3}} {
		if got := editDistance(tc.a, tc.b); got != tc.d {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.d)
		}
	}
}

func TestFiles(t *testing.T) {
	c, err := Parse([]byte(`etcd: {endpoints: ['https://e:2379'], caFile: ca, certFile: c, keyFile: k, username: u, passwordFile: pw}
tls: {certFile: tc, keyFile: tk}
backendTLS: {caFile: bca}
admin: {certFile: ac, keyFile: ak, clientCAFile: aca, tokens: [{file: t0, role: read}, {file: t1, role: admin}]}
`))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range c.Files() {
		got = append(got, f.Key+"="+f.Path)
	}
	want := "tls.certFile=tc tls.keyFile=tk backendTLS.caFile=bca etcd.caFile=ca etcd.certFile=c etcd.keyFile=k " +
		"etcd.passwordFile=pw admin.certFile=ac admin.keyFile=ak admin.clientCAFile=aca admin.tokens[0].file=t0 admin.tokens[1].file=t1"
	if strings.Join(got, " ") != want {
		t.Fatalf("files:\n%s\nwant:\n%s", strings.Join(got, " "), want)
	}
}
