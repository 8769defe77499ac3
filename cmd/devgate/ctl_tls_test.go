package main

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	adminv1 "github.com/devgate/devgate/api/devgate/admin/v1"

	"github.com/devgate/devgate/internal/testkit"
)

func TestCtlMutualTLS(t *testing.T) {
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	ca := testkit.NewCA(t, "ca")
	ca.WriteFiles(t, p("ca.pem"), p("ca-key.pem"))
	srv := testkit.Issue(t, &ca, "server", nil, net.IPv4(127, 0, 0, 1))
	testkit.Issue(t, &ca, "client", nil, nil).WriteFiles(t, p("client.pem"), p("client-key.pem"))
	pool := x509.NewCertPool()
	pool.AddCert(ca.TLS.Leaf)
	creds := credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{srv.TLS}, ClientCAs: pool,
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12})
	f := &fakeAdmin{gateways: []*adminv1.ListGatewaysResponse{{Consistent: true}}}
	addr := startFake(t, f, grpc.Creds(creds))

	out, _, code := ctl(t, "--addr", addr, "--cacert", p("ca.pem"), "--cert", p("client.pem"), "--key", p("client-key.pem"), "gateways")
	if code != 0 || !strings.Contains(out, "consistent: yes (no gateway answered)") {
		t.Fatalf("exit %d, output:\n%s", code, out)
	}
	// Without a client certificate the handshake fails.
	_, errOut, code := ctl(t, "--addr", addr, "--cacert", p("ca.pem"), "gateways")
	if code != 1 || !strings.HasPrefix(errOut, "devgate ctl gateways: cannot reach "+addr) {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	// Plaintext to a TLS port fails too.
	if _, _, code := ctl(t, "--addr", addr, "gateways"); code != 1 {
		t.Fatalf("exit %d", code)
	}
	if n := len(f.requests()); n != 1 {
		t.Fatalf("%d calls got through, want 1", n)
	}
}
