package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/devgate/devgate/internal/testkit"
	"github.com/devgate/devgate/pkg/demo"
)

// A backend whose dials are refused is ejected after admission.eject.failures
// of them; ctl backends (through the real binary) and /metrics show it, and
// its devices reach their next owner.
func TestBinaryEjectedBackendInCtl(t *testing.T) {
	bin := devgateBin(t)
	dir := t.TempDir()
	admin, httpAddr, listen := freePort(t), freePort(t), freePort(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	live := &demo.Backend{ID: "b2"}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); live.Serve(l) }()
	defer func() { live.Close(); wg.Wait() }()

	cfg := filepath.Join(dir, "eject.yaml")
	doc := fmt.Sprintf(`listen: %s
gateway: {id: gw-eject}
admin: {listen: %s, httpListen: %s}
backends:
  - {id: b1, addr: %s}
  - {id: b2, addr: %s}
admission:
  eject: {failures: 2, minBackoff: 1m, maxBackoff: 2m}
  flap: {max: 100, window: 10s, delay: 1s}
evictNotice: {type: 9, body: '{"reconnectAfter":{{.After}}}', afterMin: 5s, afterMax: 10s}
`, listen, admin, httpAddr, freePort(t), l.Addr())
	if err := os.WriteFile(cfg, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "serve.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	srv := exec.Command(bin, "serve", "--config", cfg, "--grace", "1s")
	srv.Stdout, srv.Stderr = logf, logf
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- srv.Wait() }()
	defer func() {
		srv.Process.Signal(syscall.SIGTERM) // by PID
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			srv.Process.Kill()
			<-exited
			t.Error("serve did not stop 30s after SIGTERM")
		}
		if t.Failed() {
			t.Logf("serve log:\n%s", readFile(t, logf.Name()))
		}
	}()

	// Devices log in until two of them were owned by b1 (refused: they
	// fall back to b2); every device is answered by b2.
	var conn net.Conn
	for deadline := time.Now().Add(30 * time.Second); conn == nil; time.Sleep(50 * time.Millisecond) {
		if conn, err = net.Dial("tcp", listen); err != nil && time.Now().After(deadline) {
			t.Fatalf("serve never listened: %v", err)
		}
	}
	conn.Close()
	for i := range 20 {
		c, err := net.Dial("tcp", listen)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write(testkit.Frame(1, fmt.Sprintf(`{"devid":"dev-%d"}`, i)))
		_, body, err := testkit.ReadFrame(bufio.NewReader(c))
		c.Close()
		if err != nil || !strings.Contains(string(body), `"b2"`) {
			t.Fatalf("dev-%d: %q (%v), want b2's answer", i, body, err)
		}
	}

	out, errOut, code := runBin(t, "ctl", "--addr", admin, "backends")
	if code != 0 || !strings.Contains(out, "ejected b1 on gw-eject: 2 failed dials, next trial in ") ||
		!strings.Contains(out, "ejected 1 time") || strings.Contains(out, "ejected b2") {
		t.Fatalf("ctl backends: exit %d, stdout:\n%s\nstderr: %s", code, out, errOut)
	}
	out, _, code = runBin(t, "ctl", "--addr", admin, "backends", "--json")
	if code != 0 || !strings.Contains(out, `"ejections_by_gateway"`) || !strings.Contains(out, `"ejected": true`) {
		t.Fatalf("ctl backends --json: exit %d, stdout:\n%s", code, out)
	}
	resp, err := http.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	m, _ := io.ReadAll(resp.Body)
	for _, want := range []string{`devgate_backend_ejected{backend="b1"} 1`, `devgate_backend_ejections_total{backend="b1"} 1`,
		`devgate_connections_closed_total{reason="flapping"} 0`} {
		if !strings.Contains(string(m), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
