package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/devgate/devgate/internal/testkit"
	"github.com/devgate/devgate/pkg/config"
)

// With admin.httpTLS the real binary serves the HTTP port with TLS, and
// the JSON API takes client certificates as the gRPC API does: the
// certificate's role, a token's without one.
func TestBinaryAdminHTTPTLS(t *testing.T) {
	bin := devgateBin(t)
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	ca := testkit.NewCA(t, "ca")
	ca.WriteFiles(t, p("ca.pem"), p("ca-key.pem"))
	testkit.Issue(t, &ca, "server", nil, net.IPv4(127, 0, 0, 1)).WriteFiles(t, p("server.pem"), p("server-key.pem"))
	adminCert := testkit.Issue(t, &ca, "ops", []string{"ops"}, nil)
	readCert := testkit.Issue(t, &ca, "viewer", []string{"devgate-read"}, nil)
	const readToken = "read-token-0123456789abcdef"
	if err := os.WriteFile(p("read.token"), []byte(readToken), 0o600); err != nil {
		t.Fatal(err)
	}
	httpAddr := freePort(t)
	doc := fmt.Sprintf(`listen: %s
gateway: {id: gw-tls}
admin:
  listen: %s
  httpListen: %s
  certFile: %s
  keyFile: %s
  clientCAFile: %s
  httpTLS: true
  tokens: [{file: %s, role: read}]
backends:
  - {id: b1, addr: 127.0.0.1:9101}
`, freePort(t), freePort(t), httpAddr, p("server.pem"), p("server-key.pem"), p("ca.pem"), p("read.token"))
	if err := os.WriteFile(p("tls.yaml"), []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := startBin(t, bin, true, "serve", "--config", p("tls.yaml"), "--grace", "1s")

	pool := x509.NewCertPool()
	pool.AddCert(ca.TLS.Leaf)
	client := func(certs ...tls.Certificate) *http.Client {
		return &http.Client{Timeout: 5 * time.Second,
			Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: certs}}}
	}
	base := "https://" + httpAddr
	var err error
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		var resp *http.Response
		if resp, err = client().Get(base + "/metrics"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no https /metrics in 30 s: %v\n%s", err, srv.output())
		}
	}
	if resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + httpAddr + "/metrics"); err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatalf("plain http served %.60q", body)
		}
	}
	call := func(c *http.Client, method, token, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("POST", base+"/api/v1/"+method, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", method, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	role := func(c *http.Client, token string) string {
		t.Helper()
		code, body := call(c, "Whoami", token, "{}")
		var w struct{ Role, Principal string }
		if code != http.StatusOK || json.Unmarshal([]byte(body), &w) != nil {
			return fmt.Sprintf("%d %s", code, body)
		}
		return w.Role + " " + w.Principal
	}
	for _, tc := range []struct {
		name, got, want string
	}{
		{"admin certificate", role(client(adminCert.TLS), ""), "admin cert CN=ops"},
		{"read-only certificate", role(client(readCert.TLS), ""), "read cert CN=viewer"},
		{"read token", role(client(), readToken), "read token read.token"},
	} {
		if tc.got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, tc.got, tc.want)
		}
	}
	if code, body := call(client(), "ListBackends", "", "{}"); code != http.StatusUnauthorized {
		t.Errorf("no certificate, no token: %d %s", code, body)
	}
	if code, body := call(client(readCert.TLS), "DrainBackend", "", `{"id":"b1"}`); code != http.StatusForbidden {
		t.Errorf("drain with a read-only certificate: %d %s", code, body)
	}
	// The admin certificate passes auth; a static list cannot drain.
	if code, body := call(client(adminCert.TLS), "DrainBackend", "", `{"id":"b1"}`); code != http.StatusBadRequest || !strings.Contains(body, "static backend list") {
		t.Errorf("drain with the admin certificate: %d %s", code, body)
	}
	if err := srv.stop(t); err != nil {
		t.Fatalf("serve exit: %v\n%s", err, srv.output())
	}
}

// The dashboard and JSON API are served no wider than the gRPC API.
func TestAPIExposed(t *testing.T) {
	tok := []config.AdminToken{{File: "t", Role: "read"}}
	for _, tc := range []struct {
		name string
		ac   config.Admin
		open bool
		want bool
	}{
		{"loopback, open", config.Admin{HTTPListen: "127.0.0.1:9091"}, true, true},
		{"pod network, open", config.Admin{HTTPListen: "0.0.0.0:9091"}, true, false},
		{"pod network, open, insecure", config.Admin{HTTPListen: "0.0.0.0:9091", Insecure: true}, true, true},
		{"pod network, tokens in clear", config.Admin{HTTPListen: "0.0.0.0:9091", Tokens: tok}, false, false},
		{"pod network, tokens, plaintextTokens", config.Admin{HTTPListen: "0.0.0.0:9091", Tokens: tok, PlaintextTokens: true}, false, true},
		{"pod network, tokens, httpTLS", config.Admin{HTTPListen: "0.0.0.0:9091", Tokens: tok, HTTPTLS: true}, false, true},
	} {
		if got, why := apiExposed(tc.ac, tc.open); got != tc.want || got == (why != "") {
			t.Errorf("%s: %v %q, want %v", tc.name, got, why, tc.want)
		}
	}
}
