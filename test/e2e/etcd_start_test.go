//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/devgate/devgate/internal/etcdserver"
)

// `devgate serve` started before etcd (issue 12): it says what it waits for
// (endpoint, error, next retry) within its dialTimeout, not "etcd watch
// interrupted" after 10s, and registers once etcd comes up.
func TestServeWaitsForEtcdAtStart(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "devgate")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/devgate").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	etcdAddr := freeAddr(t)
	cfg := filepath.Join(dir, "gw.yaml")
	yaml := fmt.Sprintf(`listen: %s
etcd:
  endpoints: ["http://%s"]
  dialTimeout: 1s
gateway:
  id: gw-start
admin:
  listen: %s
  httpListen: %s
log:
  level: info
`, freeAddr(t), etcdAddr, freeAddr(t), freeAddr(t))
	if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startProc(t, dir, "gw-start", bin, "serve", "--config", cfg)
	logText := func() string { b, _ := os.ReadFile(p.logPath); return string(b) }
	d := eventually(t, 8*time.Second, "a \"waiting for etcd\" line", func() bool {
		if !p.alive() {
			t.Fatalf("serve exited\n%s", logText())
		}
		return strings.Contains(logText(), "waiting for etcd")
	})
	var line string
	for _, l := range strings.Split(logText(), "\n") {
		if strings.Contains(l, "waiting for etcd") {
			line = l
			break
		}
	}
	t.Logf("after %s: %s", d.Round(time.Millisecond), line)
	for _, want := range []string{etcdAddr, `"retryIn"`, `"error"`} {
		if !strings.Contains(line, want) {
			t.Errorf("waiting line lacks %s", want)
		}
	}
	if strings.Contains(logText(), "etcd watch interrupted") {
		t.Errorf("says a watch was interrupted; there never was one")
	}

	s, err := etcdserver.Start(etcdserver.Config{Dir: filepath.Join(dir, "etcd"), ClientAddr: etcdAddr, Quick: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{s.Endpoint()}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	up := eventually(t, 20*time.Second, "gateway registered once etcd is up", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		r, err := cli.Get(ctx, "/devgate/default/gateways/gw-start")
		return err == nil && len(r.Kvs) == 1
	})
	t.Logf("registered %s after etcd came up", up.Round(time.Millisecond))
	p.stop(10 * time.Second)
}
