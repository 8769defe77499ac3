package proxy

import (
	"crypto/tls"
	"fmt"
	"os"
	"sync"
	"time"
)

// CertReloader serves a certificate from files and loads them again when
// they change, so a rotated certificate takes effect for new connections
// without a restart. Use its GetCertificate in a tls.Config.
type CertReloader struct {
	CertFile, KeyFile string
	// Check is how often the files' modification times are looked at. If
	// zero, 1s.
	Check time.Duration

	mu      sync.Mutex
	cert    *tls.Certificate
	stamp   string
	checked time.Time
}

// NewCertReloader loads the pair once, so a bad file fails at start-up.
func NewCertReloader(certFile, keyFile string) (*CertReloader, error) {
	r := &CertReloader{CertFile: certFile, KeyFile: keyFile}
	if _, err := r.GetCertificate(nil); err != nil {
		return nil, err
	}
	return r, nil
}

// GetCertificate returns the current certificate, reloading it when the
// files changed. A failed reload keeps serving the previous certificate.
func (r *CertReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	every := r.Check
	if every <= 0 {
		every = time.Second
	}
	if r.cert != nil && time.Since(r.checked) < every {
		return r.cert, nil
	}
	r.checked = time.Now()
	stamp, err := fileStamp(r.CertFile, r.KeyFile)
	if err == nil && stamp == r.stamp && r.cert != nil {
		return r.cert, nil
	}
	cert, lerr := tls.LoadX509KeyPair(r.CertFile, r.KeyFile)
	if lerr != nil {
		if r.cert != nil { // mid-rotation (one file written): keep the old pair
			return r.cert, nil
		}
		return nil, fmt.Errorf("load certificate: %w", lerr)
	}
	r.cert, r.stamp = &cert, stamp
	return r.cert, nil
}

func fileStamp(files ...string) (string, error) {
	s := ""
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			return "", err
		}
		s += fmt.Sprintf("%d/%d;", fi.ModTime().UnixNano(), fi.Size())
	}
	return s, nil
}
