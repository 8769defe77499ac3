package registry

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/devgate/devgate/internal/etcdserver"
	"github.com/devgate/devgate/internal/testkit"
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
	testkit.NewCA(t, "devgate-test").WriteFiles(t, cert, key)
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
