package main

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/devgate/devgate/internal/etcdserver"
	"github.com/devgate/devgate/pkg/demo"
)

// A backend registered with two ports through `devgate register --addr A
// --addr B` (etcd, the real binaries): a gateway spreads its devices over
// both, and `ctl backends` lists both, and the gateway's login pacing.
func TestBinaryRegisterAddrsThroughGateway(t *testing.T) {
	bin := devgateBin(t)
	etcd := etcdserver.StartT(t)
	var ports []string
	var backends []*demo.Backend
	for range 2 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		b := &demo.Backend{ID: "b1"}
		done := make(chan struct{})
		go func() { b.Serve(l); close(done) }()
		t.Cleanup(func() { b.Close(); <-done })
		ports, backends = append(ports, l.Addr().String()), append(backends, b)
	}
	const prefix = "/register-addrs"
	startChild(t, bin, "register", "--etcd", etcd.Endpoint(), "--prefix", prefix, "--cluster", "c",
		"--id", "b1", "--addr", ports[0], "--addr", ports[1], "--check-interval", "200ms")
	dir := t.TempDir()
	admin, listen := freeAddrOn(t, "127.0.0.1"), freeAddrOn(t, "127.0.0.1")
	cfg := strings.Replace(serveConfig(etcd.Endpoint(), prefix, "gw-a", admin, freeAddrOn(t, "127.0.0.1"), ""),
		"listen: 127.0.0.1:0", "listen: "+listen+"\nadmission: {loginsPerSecond: 500, slowStart: 0s}", 1)
	startChild(t, bin, "serve", "--config", writeFile(t, dir, "gw.yaml", cfg), "--grace", "1s")

	wantLine := fmt.Sprintf("addresses of b1: %s %s\n", ports[0], ports[1])
	until(t, 30*time.Second, "ctl backends lists both addresses", func() bool {
		out, code := runCtlBin(t, bin, "--addr", admin, "backends")
		return code == 0 && strings.Contains(out, ports[0]+" (+1)") && strings.Contains(out, wantLine)
	})
	const n = 20
	for i := range n {
		conn, got, err := deviceLogin(listen, fmt.Sprintf("dev-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		conn.Close()
		if got != "b1" {
			t.Fatalf("dev-%d answered by %q", i, got)
		}
	}
	// Paced at 500 logins/s: ctl backends says so, with every login admitted.
	until(t, 10*time.Second, "ctl backends shows the pace", func() bool {
		out, code := runCtlBin(t, bin, "--addr", admin, "backends")
		return code == 0 && strings.Contains(out, fmt.Sprintf("pacing b1: 500.0 logins/s, 0 waiting devices, %d admitted\n", n))
	})
	a, b := backends[0].Stats().Logins, backends[1].Stats().Logins // Accepted counts the sidecar's probes too
	t.Logf("devices per port: %s %d, %s %d", ports[0], a, ports[1], b)
	if a == 0 || b == 0 || a+b != n {
		t.Fatalf("devices per port %d and %d: want both ports used, %d in all", a, b, n)
	}
}
