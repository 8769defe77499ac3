package registry

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/devgate/devgate/internal/etcdserver"
)

func TestClientConfigErrors(t *testing.T) {
	for name, c := range map[string]ClientConfig{
		"no endpoints":       {Endpoints: []string{" ", ""}},
		"password, no user":  {Endpoints: []string{"http://e:2379"}, Password: "p"},
		"cert without key":   {Endpoints: []string{"http://e:2379"}, Cert: "c.pem"},
		"missing CA file":    {Endpoints: []string{"https://e:2379"}, CACert: "/nonexistent/ca.pem"},
		"CA file is not PEM": {Endpoints: []string{"https://e:2379"}, CACert: "register_client_test.go"},
	} {
		if _, err := c.config(nil); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestClientConfigTLS(t *testing.T) {
	dir := t.TempDir()
	ca, cert, key := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeSelfSigned(t, cert, key)
	b, _ := os.ReadFile(cert)
	os.WriteFile(ca, b, 0o600)

	cfg, err := ClientConfig{Endpoints: []string{"https://e:2379"}}.config(nil)
	if err != nil || cfg.TLS == nil || cfg.TLS.RootCAs != nil {
		t.Fatalf("https endpoint: want TLS with system roots, got %+v %v", cfg.TLS, err)
	}
	cfg, err = ClientConfig{Endpoints: []string{"e:2379"}, CACert: ca, Cert: cert, Key: key, Username: "u", Password: "p"}.config(nil)
	if err != nil || cfg.TLS == nil || cfg.TLS.RootCAs == nil || len(cfg.TLS.Certificates) != 1 || cfg.Username != "u" {
		t.Fatalf("CA and client cert: %+v %v", cfg.TLS, err)
	}
	cfg, err = ClientConfig{Endpoints: []string{"http://e:2379"}}.config(nil)
	if err != nil || cfg.TLS != nil || cfg.DialTimeout != 5*time.Second {
		t.Fatalf("plain: %+v %v", cfg, err)
	}
}

func TestClientConfigNewTalksToEtcd(t *testing.T) {
	s := etcdserver.StartT(t)
	cli, err := ClientConfig{Endpoints: []string{s.Endpoint()}}.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Put(regCtx(t), "/k", "v"); err != nil {
		t.Fatal(err)
	}
}

func writeSelfSigned(t *testing.T, certFile, keyFile string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "devgate-test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}), 0o600)
}
