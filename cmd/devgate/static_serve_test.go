package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// freePort is a loopback address nothing listens on right now.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// serve with a static backend list serves the admin API too: listing,
// lookup and status work; drains and rebalance say they need etcd.
func TestBinaryStaticServeAdmin(t *testing.T) {
	bin := devgateBin(t)
	dir := t.TempDir()
	admin := freePort(t)
	cfg := filepath.Join(dir, "static.yaml")
	doc := fmt.Sprintf(`listen: %s
gateway: {id: gw-static}
admin: {listen: %s, httpListen: %s}
backends:
  - {id: b1, addr: 127.0.0.1:9101}
  - {id: b2, addr: 127.0.0.1:9102, addrs: [127.0.0.1:9102, 127.0.0.1:9103], zone: a}
`, freePort(t), admin, freePort(t))
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
		case err := <-exited:
			if err != nil {
				t.Errorf("serve exited with %v", err)
			}
		case <-time.After(30 * time.Second):
			srv.Process.Kill()
			<-exited
			t.Error("serve did not stop 30s after SIGTERM")
		}
		if t.Failed() {
			t.Logf("serve log:\n%s", readFile(t, logf.Name()))
		}
	}()

	var out, errOut string
	code := -1
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if out, errOut, code = runBin(t, "ctl", "--addr", admin, "backends"); code == 0 {
			break
		}
	}
	want := `ID  ADDR                 WEIGHT  ZONE  STATE   SHARE  CONNS
b1  127.0.0.1:9101       100     -     active  `
	if code != 0 || !strings.HasPrefix(out, want) || !strings.Contains(out, "\nb2  127.0.0.1:9102 (+1)  100     a     active") ||
		!strings.Contains(out, "\naddresses of b2: 127.0.0.1:9102 127.0.0.1:9103\n") {
		t.Fatalf("ctl backends: exit %d, stdout:\n%s\nstderr: %s", code, out, errOut)
	}

	// JSON logs carry ISO 8601 times.
	first, _, _ := strings.Cut(readFile(t, logf.Name()), "\n")
	var entry struct{ TS string }
	if err := json.Unmarshal([]byte(first), &entry); err != nil {
		t.Errorf("first log line %q: %v", first, err)
	} else if _, err := time.Parse("2006-01-02T15:04:05.000Z0700", entry.TS); err != nil {
		t.Errorf("log time %q is not ISO 8601: %v", entry.TS, err)
	}

	out, _, code = runBin(t, "ctl", "--addr", admin, "lookup", "dev-42")
	if code != 0 || !strings.Contains(out, "gw-static") || !strings.Contains(out, "b1") || !strings.Contains(out, "b2") {
		t.Errorf("ctl lookup: exit %d, stdout:\n%s", code, out)
	}
	out, _, code = runBin(t, "ctl", "--addr", admin, "gateways")
	if code != 0 || !strings.Contains(out, "gw-static  "+admin) || !strings.Contains(out, "- (no etcd)") {
		t.Errorf("ctl gateways: exit %d, stdout:\n%s", code, out)
	}
	for _, args := range [][]string{{"drain", "b1"}, {"undrain", "b1"}, {"rebalance"}} {
		out, errOut, code = runBin(t, append([]string{"ctl", "--addr", admin}, args...)...)
		want := "devgate ctl " + args[0] + ": not possible on this gateway: this gateway routes on a static backend list, without etcd: "
		if code != exitFailed || out != "" || !strings.HasPrefix(errOut, want) || strings.Count(errOut, "\n") != 1 {
			t.Errorf("ctl %s: exit %d, stdout %q, stderr %q; want exit 1 and %q...", args, code, out, errOut, want)
		}
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
