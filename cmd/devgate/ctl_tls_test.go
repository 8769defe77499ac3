package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	adminv1 "github.com/devgate/devgate/api/devgate/admin/v1"
)

// testCert issues a certificate signed by parent (self-signed when nil)
// and writes it and its key as PEM files in dir.
func testCert(t *testing.T, dir, name string, tmpl *x509.Certificate, parent *tls.Certificate) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = big.NewInt(time.Now().UnixNano())
	tmpl.Subject = pkix.Name{CommonName: name}
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	signer, signerKey := tmpl, any(key)
	if parent != nil {
		signer, signerKey = parent.Leaf, parent.PrivateKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
	for file, b := range map[string][]byte{name + ".pem": certPEM, name + "-key.pem": keyPEM} {
		if err := os.WriteFile(filepath.Join(dir, file), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return c // Leaf is set since Go 1.23
}

func TestCtlMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca := testCert(t, dir, "ca", &x509.Certificate{IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}, nil)
	srv := testCert(t, dir, "server", &x509.Certificate{IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, &ca)
	testCert(t, dir, "client", &x509.Certificate{ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, &ca)
	pool := x509.NewCertPool()
	pool.AddCert(ca.Leaf)
	creds := credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{srv}, ClientCAs: pool,
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12})
	f := &fakeAdmin{gateways: []*adminv1.ListGatewaysResponse{{Consistent: true}}}
	addr := startFake(t, f, grpc.Creds(creds))
	p := func(name string) string { return filepath.Join(dir, name) }

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
