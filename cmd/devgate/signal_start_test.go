package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// SIGTERM while serve waits for its first ring from an etcd that is not
// there: a clean exit 0 with the reason logged, not a kill by the signal.
func TestBinarySignalWhileWaitingForEtcd(t *testing.T) {
	bin := devgateBin(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "devgate.yaml")
	conf := fmt.Sprintf(`listen: %s
key: {json: devid, types: [1]}
etcd:
  endpoints: [http://%s]
  dialTimeout: 1s
admin: {listen: "off", httpListen: %s}
`, freePort(t), freePort(t), freePort(t)) // nothing listens on the etcd port
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	gw := startServe(t, dir, bin, "serve", "--config", cfg)
	waitLog(t, gw, "waiting for the first ring from etcd")
	if err := gw.stop(10 * time.Second); err != nil {
		t.Fatalf("SIGTERM while waiting for etcd: %v\n%s", err, gw.log())
	}
	if !strings.Contains(gw.log(), "signal during start-up") {
		t.Fatalf("no start-up signal line:\n%s", gw.log())
	}
}

// SIGTERM while dev mode starts (its embedded etcd's data directory just
// made): exit 0, and the directory is removed rather than left behind.
func TestBinaryDevSignalDuringStartup(t *testing.T) {
	bin := devgateBin(t)
	dir, tmp := t.TempDir(), t.TempDir()
	gw := startServeEnv(t, dir, bin, []string{"TMPDIR=" + tmp}, "dev", "--listen", "127.0.0.1:0",
		"--etcd-listen", freePort(t), "--admin-listen", freePort(t), "--admin-http-listen", freePort(t), "--backends", "3")
	deadline := time.Now().Add(20 * time.Second)
	for {
		if ents, _ := os.ReadDir(tmp); len(ents) > 0 {
			break // the handler is in place: it comes before the directory
		}
		if time.Now().After(deadline) || !gw.alive() {
			t.Fatalf("no etcd data directory in %s\n%s", tmp, gw.log())
		}
		time.Sleep(2 * time.Millisecond)
	}
	if err := gw.stop(30 * time.Second); err != nil {
		t.Fatalf("SIGTERM during dev start-up: %v\n%s", err, gw.log())
	}
	if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
		t.Fatalf("left behind in TMPDIR: %v\n%s", ents, gw.log())
	}
}

// waitLog waits up to 20 s for the process to log line.
func waitLog(t *testing.T, p *serveProc, line string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(p.log(), line) {
		if time.Now().After(deadline) || !p.alive() {
			t.Fatalf("no %q in the log:\n%s", line, p.log())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
