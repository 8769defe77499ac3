package main

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/devgate/devgate/pkg/ring"
)

// The port check reads the range from a file: a narrow range against many
// connections per backend warns; a wide one, or no backends, does not.
func TestCheckPorts(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) string {
		p := filepath.Join(dir, "range")
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, c := range []struct {
		name, file string
		conns      int64
		busiest    float64
		sources    int
		warn       string
	}{
		{"narrow", "40000\t40199\n", 1000, 0.34, 1, "ephemeral port range 40000-40199 (200 ports) is smaller than the 340 connections"},
		{"narrow, three sources", "40000\t40199\n", 1000, 0.34, 3, ""},
		{"default range, a million", "32768\t60999\n", 1000000, 0.1, 1, "(28232 ports) is smaller than the 100000 connections"},
		{"wide", "1024 65535\n", 100000, 0.34, 1, ""},
		{"no backends yet", "40000 40001\n", 1000, 0, 1, ""},
		{"no cap", "40000 40001\n", -1, 0.34, 1, ""},
		{"unreadable", "40000\n", 1000, 0.34, 1, ""},
	} {
		core, logs := observer.New(zapcore.DebugLevel)
		checkPorts(write(c.file), c.conns, c.busiest, c.sources, zap.New(core))
		warns := logs.FilterLevelExact(zapcore.WarnLevel).All()
		switch {
		case c.warn == "" && len(warns) > 0:
			t.Errorf("%s: unexpected warning %q", c.name, warns[0].Message)
		case c.warn != "" && (len(warns) != 1 || !strings.Contains(warns[0].Message, c.warn)):
			t.Errorf("%s: warnings %v, want one with %q", c.name, warns, c.warn)
		}
	}
	if _, _, err := readPortRange(write("9 5")); err == nil {
		t.Error("readPortRange took 9 5")
	}
}

// startcheckConfig is a serve config with maxConnections conns, three
// static backends (never dialled here) and strictFiles as given.
func startcheckConfig(t *testing.T, conns int, strict bool) string {
	t.Helper()
	return startcheckConfigWith(t, conns, strict, `backends: [{id: b1, addr: "127.0.0.1:1"}, {id: b2, addr: "127.0.0.1:2"}, {id: b3, addr: "127.0.0.1:3"}]`)
}

// startcheckConfigWith is startcheckConfig with more YAML (the backends).
func startcheckConfigWith(t *testing.T, conns int, strict bool, more string) string {
	t.Helper()
	cfg := fmt.Sprintf(`listen: %s
%s
admin: {listen: "off", httpListen: %s}
limits: {maxConnections: %d, strictFiles: %v}
log: {format: console}
`, freePort(t), more, freePort(t), conns, strict)
	path := filepath.Join(t.TempDir(), "devgate.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// serveUntilLine runs devgate serve --config cfg under the shell line sh
// ($0 the binary, $@ its arguments) until stderr has a line with want.
func serveUntilLine(t *testing.T, sh, cfg, want string) (line string, code int) {
	t.Helper()
	return runUntilLine(t, sh, want, func(string) {}, "serve", "--config", cfg)
}

// runUntilLine runs the shell line sh (with $0 the devgate binary and $@
// args) until stderr has a line with want, then calls then with the stderr
// so far and kills it (then nil: it waits for its end); it returns that
// line ("" if the process ended or a minute passed first) and the exit
// code. A kill, not SIGTERM: during start-up serve and dev may not handle
// the signal yet.
func runUntilLine(t *testing.T, sh, want string, then func(seen string), args ...string) (line string, code int) {
	t.Helper()
	cmd := exec.Command("bash", append([]string{"-c", sh, devgateBin(t)}, args...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	timer := time.AfterFunc(time.Minute, func() { cmd.Process.Kill() })
	defer timer.Stop()
	var all strings.Builder
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		all.WriteString(sc.Text() + "\n")
		if strings.Contains(sc.Text(), want) {
			line = sc.Text()
			if then != nil {
				then(all.String())
				cmd.Process.Kill()
			}
			break
		}
	}
	io.Copy(io.Discard, stderr)
	err = cmd.Wait()
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	t.Logf("exit %d, stderr:\n%s", code, all.String())
	return line, code
}

// The real binary under a low file limit (soft 200, hard 256) and
// maxConnections 50000: it raises the soft limit to 256 and warns; with
// limits.strictFiles it refuses to start and says why.
func TestBinaryStartupFileLimit(t *testing.T) {
	const low = `ulimit -Sn 200 && ulimit -Hn 256 && exec "$0" "$@"`
	line, _ := serveUntilLine(t, low, startcheckConfig(t, 50000, false), "file limit (RLIMIT_NOFILE)")
	if !strings.Contains(line, "WARN") || !strings.Contains(line, "file limit (RLIMIT_NOFILE) 256, hard 256, is below the 100128 that limits.maxConnections 50000 needs") {
		t.Fatalf("no file-limit warning; line %q", line)
	}
	line, code := runUntilLine(t, low, "limits.strictFiles is on", nil, "serve", "--config", startcheckConfig(t, 50000, true))
	if code == 0 || !strings.Contains(line, "devgate serve: file limit cannot hold limits.maxConnections: file limit (RLIMIT_NOFILE) 256") {
		t.Fatalf("strictFiles: exit %d, line %q; want a non-zero exit with the reason", code, line)
	}
	// Enough files: no warning, and strictFiles starts.
	// The limit and the files in use are on /metrics (the process collector).
	var metrics string
	line, _ = runUntilLine(t, `ulimit -n 256 && exec "$0" "$@"`, "devgate serving", func(seen string) {
		addr := regexp.MustCompile(`admin http serving\t\{"addr": "([^"]+)"`).FindStringSubmatch(seen)
		if addr == nil {
			return
		}
		metrics = scrape(t, addr[1])
	}, "serve", "--config", startcheckConfig(t, 50, true))
	if line == "" {
		t.Fatal("50 connections in 256 files: serve did not start")
	}
	if !strings.Contains(metrics, "\nprocess_max_fds 256\n") || !strings.Contains(metrics, "\nprocess_open_fds ") {
		t.Fatalf("/metrics has no process_max_fds 256 and process_open_fds:\n%.2000s", metrics)
	}
}

// devgate dev runs the same checks: its gateway (maxConnections 100000 by
// default) under a 1024-file limit warns.
func TestBinaryDevStartupFileLimit(t *testing.T) {
	line, _ := runUntilLine(t, `ulimit -n 1024 && exec "$0" "$@"`, "file limit (RLIMIT_NOFILE)", func(string) {}, "dev", "--backends", "1",
		"--listen", freePort(t), "--etcd-listen", freePort(t), "--admin-listen", freePort(t), "--admin-http-listen", freePort(t))
	if !strings.Contains(line, "WARN") || !strings.Contains(line, "file limit (RLIMIT_NOFILE) 1024, hard 1024, is below the 200128 that limits.maxConnections 100000 needs") {
		t.Fatalf("no file-limit warning from dev; line %q", line)
	}
}

// The real binary in a network namespace whose ephemeral range is 200
// ports, with maxConnections 1000 over three backends, warns at start.
// Skipped where a namespace cannot be made (not root, no unshare).
func TestBinaryStartupPortRange(t *testing.T) {
	if out, err := exec.Command("unshare", "-n", "true").CombinedOutput(); err != nil {
		t.Skipf("no network namespace here (unshare -n: %v %s); TestCheckPorts covers the check", err, out)
	}
	const narrow = `exec unshare -n bash -c 'ip link set lo up && echo "40000 40199" > /proc/sys/net/ipv4/ip_local_port_range && exec "$0" "$@"' "$0" "$@"`
	line, _ := serveUntilLine(t, narrow, startcheckConfig(t, 1000, false), "ephemeral port range")
	if !strings.Contains(line, "WARN") || !strings.Contains(line, "ephemeral port range 40000-40199 (200 ports) is smaller than the") ||
		!strings.Contains(line, "connections expected on the busiest backend address from one source address (limits.maxConnections 1000 x its") {
		t.Fatalf("no port-range warning; line %q", line)
	}
	// Three source addresses, or the busiest backend on three ports: 112
	// connections per (source, backend address) fit; no warning.
	for name, more := range map[string]string{
		"three sources": `backends: [{id: b1, addr: "127.0.0.1:1"}, {id: b2, addr: "127.0.0.1:2"}, {id: b3, addr: "127.0.0.1:3"}]
dial: {sourceAddrs: [127.0.0.1, 127.0.0.2, 127.0.0.3]}`,
		"three ports": `backends: [{id: b1, addrs: ["127.0.0.1:1", "127.0.0.1:4", "127.0.0.1:5"]}]`,
	} {
		conns := 1000
		if name == "three ports" {
			conns = 330 // one backend: all of them, over its three ports
		}
		line, _ := serveUntilLine(t, narrow, startcheckConfigWith(t, conns, false, more), "ephemeral port range")
		if !strings.Contains(line, "INFO") || !strings.Contains(line, `"connectionsPerBackendAndSource": 11`) {
			t.Errorf("%s: want no warning and 110-112 connections per pair; line %q", name, line)
		}
	}
}

// busiestAddr: a backend's share of the ring over its ports.
func TestBusiestAddr(t *testing.T) {
	one, err := ring.New(ring.ModeConsistent, []ring.Backend{{ID: "b", Addr: "127.0.0.1:2", Addrs: []string{"127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:4"}}})
	if err != nil {
		t.Fatal(err)
	}
	if got := busiestAddr(one); got < 0.333 || got > 0.334 {
		t.Errorf("one backend on three ports: busiestAddr = %v, want 1/3", got)
	}
	two, err := ring.New(ring.ModeConsistent, []ring.Backend{{ID: "a", Addr: "127.0.0.1:1"},
		{ID: "b", Addr: "127.0.0.1:2", Addrs: []string{"127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:4"}}})
	if err != nil {
		t.Fatal(err)
	}
	if sh := two.Shares(); busiestAddr(two) != max(sh[0], sh[1]/3) {
		t.Errorf("busiestAddr = %v, want %v (shares %v)", busiestAddr(two), max(sh[0], sh[1]/3), sh)
	}
}

// scrape reads /metrics at the admin HTTP address addr ("" on error).
func scrape(t *testing.T, addr string) string {
	cl := &http.Client{Timeout: 10 * time.Second}
	resp, err := cl.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Log(err)
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
