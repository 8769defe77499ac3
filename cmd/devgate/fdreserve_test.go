package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/devgate/devgate/pkg/demo"
)

const serveHelperEnv = "DEVGATE_SERVE_HELPER"

// TestHelperServe is the child of TestAdminAnswersWhenOutOfFDs: devgate
// serve with the config file in $DEVGATE_SERVE_HELPER, in a process allowed
// $DEVGATE_SERVE_NOFILE open files (soft and hard), until SIGTERM.
func TestHelperServe(t *testing.T) {
	cfg := os.Getenv(serveHelperEnv)
	if cfg == "" {
		return
	}
	n, _ := strconv.ParseUint(os.Getenv("DEVGATE_SERVE_NOFILE"), 10, 64)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: n, Max: n}); err != nil {
		fmt.Println("setrlimit:", err)
		os.Exit(1)
	}
	err := runServe(serveFlags{config: cfg, grace: time.Second}, true)
	fmt.Println("serve:", err)
	os.Exit(0)
}

// freePort returns a loopback address free a moment ago.
// A flood of silent devices against devgate serve with no connection limit
// and few file descriptors leaves the admin port answering: the cap is
// lowered at start to keep descriptors for it (and said so in the log).
func TestAdminAnswersWhenOutOfFDs(t *testing.T) {
	bl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &demo.Backend{ID: "b1"}
	bdone := make(chan struct{})
	go func() { b.Serve(bl); close(bdone) }()
	defer func() { b.Close(); <-bdone }()

	for _, loops := range []bool{true, false} {
		t.Run(fmt.Sprintf("eventLoop=%v", loops), func(t *testing.T) {
			dir := t.TempDir()
			listen, adminHTTP := freePort(t), freePort(t)
			cfg := fmt.Sprintf(`listen: %s
backends: [{id: b1, addr: %q}]
admin: {listen: "off", httpListen: %s}
limits: {maxConnections: -1, maxConnectionsPerIP: -1, acceptRatePerIP: -1, prereadTimeout: 1m}
eventLoop: %v
`, listen, bl.Addr(), adminHTTP, loops)
			path := filepath.Join(dir, "devgate.yaml")
			if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			logf, err := os.Create(filepath.Join(dir, "log"))
			if err != nil {
				t.Fatal(err)
			}
			defer logf.Close()
			cmd := exec.Command(os.Args[0], "-test.run=^TestHelperServe$")
			cmd.Env = append(os.Environ(), serveHelperEnv+"="+path, "DEVGATE_SERVE_NOFILE=256")
			cmd.Stdout, cmd.Stderr = logf, logf
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { cmd.Process.Kill(); cmd.Wait() }()

			// A new connection per request, as kubelet probes and scrapes
			// after an idle period make: one kept alive would hide the fault.
			hc := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
			get := func(p string) (int, string, error) {
				resp, err := hc.Get("http://" + adminHTTP + p)
				if err != nil {
					return 0, "", err
				}
				defer resp.Body.Close()
				body, err := io.ReadAll(resp.Body)
				return resp.StatusCode, string(body), err
			}
			deadline := time.Now().Add(20 * time.Second)
			for {
				if code, _, err := get("/healthz"); err == nil && code == 200 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("devgate serve did not come up")
				}
				time.Sleep(50 * time.Millisecond)
			}

			// 400 silent devices: more than 256 descriptors could hold.
			var flood []net.Conn
			defer func() {
				for _, c := range flood {
					c.Close()
				}
			}()
			for range 400 {
				c, err := net.DialTimeout("tcp", listen, 2*time.Second)
				if err != nil {
					continue
				}
				flood = append(flood, c)
			}
			time.Sleep(500 * time.Millisecond) // let it accept what it will

			code, _, err := get("/readyz")
			if err != nil || code != 200 {
				t.Fatalf("/readyz during the flood: %d, %v", code, err)
			}
			code, metrics, err := get("/metrics")
			if err != nil || code != 200 {
				t.Fatalf("/metrics during the flood: %d, %v", code, err)
			}
			for _, l := range strings.Split(metrics, "\n") {
				if strings.HasPrefix(l, "devgate_accept") || strings.HasPrefix(l, "devgate_connections_active") || strings.HasPrefix(l, "process_open_fds") {
					t.Log(l)
				}
			}
			m := regexp.MustCompile(`devgate_connections_closed_total\{reason="max_conns"\} (\d+)`).FindStringSubmatch(metrics)
			if m == nil || m[1] == "0" {
				t.Fatalf("no connection refused as max_conns during the flood: %v", m)
			}
			t.Logf("%d devices connected; /readyz and /metrics answered; %s refused as max_conns", len(flood), m[1])

			cmd.Process.Signal(syscall.SIGTERM)
			cmd.Wait()
			logs, _ := os.ReadFile(logf.Name())
			if !strings.Contains(string(logs), "connection cap lowered") {
				t.Fatalf("no start-up warning about the descriptor budget in:\n%s", logs)
			}
		})
	}
}
