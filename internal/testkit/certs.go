package testkit

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
	"sync/atomic"
	"testing"
	"time"
)

// Cert is a test certificate (P-256, valid an hour either side of now)
// with its key, as a tls.Certificate (Leaf set) and as PEM.
type Cert struct {
	TLS             tls.Certificate
	CertPEM, KeyPEM []byte
}

var serial atomic.Int64

// NewCA returns a self-signed CA named cn.
func NewCA(t testing.TB, cn string) Cert {
	t.Helper()
	return sign(t, nil, &x509.Certificate{Subject: pkix.Name{CommonName: cn}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature})
}

// Issue returns a leaf for cn with organisational units ou, signed by ca
// (self-signed when nil): a server certificate for ip when ip is set, a
// client certificate otherwise.
func Issue(t testing.TB, ca *Cert, cn string, ou []string, ip net.IP) Cert {
	t.Helper()
	tmpl := &x509.Certificate{Subject: pkix.Name{CommonName: cn, OrganizationalUnit: ou},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	return sign(t, ca, tmpl)
}

// WriteFiles writes the certificate and key as PEM; the key first, so a
// reloader that sees the new certificate finds its key.
func (c Cert) WriteFiles(t testing.TB, certFile, keyFile string) {
	t.Helper()
	if err := os.WriteFile(keyFile, c.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, c.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
}

func sign(t testing.TB, parent *Cert, tmpl *x509.Certificate) Cert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = big.NewInt(time.Now().UnixNano() + serial.Add(1))
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	signer, signerKey := tmpl, any(key)
	if parent != nil {
		signer, signerKey = parent.TLS.Leaf, parent.TLS.PrivateKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	c := Cert{CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})}
	if c.TLS, err = tls.X509KeyPair(c.CertPEM, c.KeyPEM); err != nil {
		t.Fatal(err)
	}
	return c // tls.X509KeyPair sets Leaf (Go 1.23)
}
