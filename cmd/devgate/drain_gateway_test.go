package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/devgate/devgate/internal/etcdserver"
	"github.com/devgate/devgate/pkg/demo"
	"github.com/devgate/devgate/pkg/registry"
	"github.com/devgate/devgate/pkg/sim"
)

// Issue 12: `ctl drain-gateway` made the replica exit 1. Through the built
// binary: a drained `devgate serve` stays up and not ready while it evicts
// at the pace, refuses devices, comes back ready with `ctl
// undrain-gateway`, and exits 0 on SIGTERM while drained.
func TestDrainGatewayKeepsReplicaUp(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	const (
		devices = 60
		pace    = 30.0
	)
	dir := t.TempDir()
	bin := devgateBin(t)
	etcd := etcdserver.StartT(t)
	cli := etcdserver.ClientT(t, etcd)
	bl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	backend := &demo.Backend{ID: "demo-1"}
	served := make(chan struct{})
	go func() { defer close(served); backend.Serve(bl) }()
	t.Cleanup(func() { backend.Close(); <-served })
	reg, err := registry.RegisterBackend(t.Context(), cli, registry.Keys{}, "demo-1",
		registry.BackendValue{Addr: bl.Addr().String()}, registry.RegisterOptions{Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })

	listen, adminAddr, httpAddr := freePort(t), freePort(t), freePort(t)
	cfg := filepath.Join(dir, "gw.yaml")
	yaml := fmt.Sprintf("listen: %s\netcd:\n  endpoints: [%q]\ngateway:\n  id: gw-t\nadmin:\n  listen: %s\n  httpListen: %s\n"+
		"limits:\n  maxConnectionsPerIP: -1\n  acceptRatePerIP: -1\n", listen, etcd.Endpoint(), adminAddr, httpAddr)
	if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	gw := startServe(t, dir, bin, "serve", "--config", cfg, "--grace", "5s")
	waitReady := func(want int) string {
		t.Helper()
		var code int
		var body string
		for start := time.Now(); time.Since(start) < 30*time.Second; time.Sleep(100 * time.Millisecond) {
			if code, body = get(httpAddr, "/readyz"); code == want {
				return body
			}
			if !gw.alive() {
				t.Fatalf("devgate serve exited: %v\n%s", gw.err, gw.log())
			}
		}
		t.Fatalf("/readyz: %d %q, want %d\n%s", code, body, want, gw.log())
		return ""
	}
	waitReady(200)

	var mu sync.Mutex
	var closes []time.Time
	var held sync.WaitGroup
	for i := range devices {
		conn, b, err := deviceLogin(listen, fmt.Sprintf("dev-%d", i))
		if err != nil || b != "demo-1" {
			t.Fatalf("device %d: backend %q, %v", i, b, err)
		}
		held.Go(func() {
			defer conn.Close()
			conn.SetReadDeadline(time.Now().Add(60 * time.Second))
			io.Copy(io.Discard, conn)
			mu.Lock()
			closes = append(closes, time.Now())
			mu.Unlock()
		})
	}

	ctl := func(args ...string) (string, int) {
		cmd := exec.Command(bin, append([]string{"ctl", "--addr", adminAddr, "--timeout", "20s"}, args...)...)
		out, err := cmd.CombinedOutput()
		t.Logf("$ devgate ctl %s (exit %d)\n%s", strings.Join(args, " "), cmd.ProcessState.ExitCode(), out)
		if err != nil && cmd.ProcessState == nil {
			t.Fatal(err)
		}
		return string(out), cmd.ProcessState.ExitCode()
	}
	out, code := ctl("drain-gateway", "gw-t", "--pace", fmt.Sprint(pace), "--wait")
	if code != 0 || !strings.Contains(out, "gateway gw-t drained") {
		t.Fatalf("drain-gateway --wait: exit %d\n%s", code, gw.log())
	}
	held.Wait() // every device was evicted (or the read deadline failed the test below)
	sort.Slice(closes, func(i, j int) bool { return closes[i].Before(closes[j]) })
	span := closes[len(closes)-1].Sub(closes[0])
	rate := float64(len(closes)-1) / span.Seconds()
	t.Logf("evicted %d devices over %v: %.1f/s at --pace %v", len(closes), span.Round(time.Millisecond), rate, pace)
	// Faster than the pace is the herd the pace exists to prevent; a loaded
	// machine may be slower, so the lower bound is loose.
	if rate > pace*1.25 || rate < pace/4 {
		t.Errorf("eviction rate %.1f/s, want about %v/s", rate, pace)
	}

	time.Sleep(1500 * time.Millisecond) // the old code had exited 1 by now
	if !gw.alive() {
		t.Fatalf("devgate serve exited after the drain: %v\n%s", gw.err, gw.log())
	}
	if body := waitReady(503); !strings.HasPrefix(body, "draining") {
		t.Errorf("/readyz while drained: %q", body)
	}
	if c, err := net.DialTimeout("tcp", listen, time.Second); err == nil {
		c.Close()
		t.Error("a drained gateway accepted a device")
	}
	if out, code := ctl("drain-gateway", "nope"); code != 1 || !strings.Contains(out, "ctl gateways") {
		t.Errorf("unknown gateway: exit %d, want 1 and a pointer to 'ctl gateways'", code)
	}

	if out, code := ctl("undrain-gateway", "gw-t"); code != 0 || !strings.Contains(out, "undrained gateway gw-t") {
		t.Fatalf("undrain-gateway: exit %d", code)
	}
	waitReady(200)
	if c, b, err := deviceLogin(listen, "dev-after"); err != nil || b != "demo-1" {
		t.Fatalf("login after undrain: backend %q, %v", b, err)
	} else {
		c.Close()
	}
	if out, code := ctl("undrain-gateway", "gw-t"); code != 0 || !strings.Contains(out, "was not draining") {
		t.Errorf("second undrain-gateway: exit %d", code)
	}

	// Drained again, SIGTERM while it evicts: a clean exit 0.
	for i := range 3 {
		c, _, err := deviceLogin(listen, fmt.Sprintf("dev-last-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	if _, code := ctl("drain-gateway", "gw-t", "--pace", "0.5"); code != 0 {
		t.Fatal("second drain-gateway failed")
	}
	waitReady(503)
	if err := gw.stop(15 * time.Second); err != nil {
		t.Fatalf("SIGTERM while drained: %v\n%s", err, gw.log())
	}
}

// serveProc is a devgate process; stderr goes to a file shown on failure.
type serveProc struct {
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error // Wait's, once done is closed
}

func startServe(t *testing.T, dir, bin string, args ...string) *serveProc {
	t.Helper()
	return startServeEnv(t, dir, bin, nil, args...)
}

// startServeEnv is startServe with env added to the process's environment.
func startServeEnv(t *testing.T, dir, bin string, env []string, args ...string) *serveProc {
	t.Helper()
	p := &serveProc{logPath: filepath.Join(dir, "serve.log"), done: make(chan struct{})}
	logf, err := os.Create(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(bin, args...)
	if env != nil {
		p.cmd.Env = append(os.Environ(), env...)
	}
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); logf.Close(); close(p.done) }()
	t.Cleanup(func() { // by PID, if the test left it running
		if p.alive() {
			p.cmd.Process.Kill()
		}
		<-p.done
	})
	return p
}

func (p *serveProc) alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM and returns Wait's error (nil: exit 0).
func (p *serveProc) stop(within time.Duration) error {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.err
	case <-time.After(within):
		return fmt.Errorf("still running %v after SIGTERM", within)
	}
}

func (p *serveProc) log() string {
	b, _ := os.ReadFile(p.logPath)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

func get(addr, path string) (int, string) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(bytes.TrimSpace(b))
}

// deviceLogin connects, logs devid in and returns the backend that answered.
func deviceLogin(addr, devid string) (net.Conn, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, "", err
	}
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	login := sim.AppendFrame(nil, sim.TypeLogin, 1, 0, []byte(fmt.Sprintf(`{"devid":%q}`, devid)))
	var hdr [sim.HeaderLen]byte
	if _, err := conn.Write(login); err == nil {
		_, err = io.ReadFull(conn, hdr[:])
	}
	body := make([]byte, int(hdr[4])<<8|int(hdr[5]))
	if err == nil {
		_, err = io.ReadFull(conn, body)
	}
	var reply struct{ Backend string }
	if err == nil {
		err = json.Unmarshal(body, &reply)
	}
	if err != nil {
		conn.Close()
		return nil, "", fmt.Errorf("login %s: %w", devid, err)
	}
	conn.SetDeadline(time.Time{})
	return conn, reply.Backend, nil
}
