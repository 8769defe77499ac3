package main

import (
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/devgate/devgate/pkg/proxy"
	"github.com/devgate/devgate/pkg/registry"
	"github.com/devgate/devgate/pkg/sim"
)

// backendMeta reads the registration meta of backend id from etcd.
func backendMeta(t *testing.T, endpoint, id string) map[string]string {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	key := registry.Keys{}.Backend(id)
	resp, err := cli.Get(ctx, key)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("get %s: %v, %d keys", key, err, len(resp.Kvs))
	}
	var v registry.BackendValue
	if err := json.Unmarshal(resp.Kvs[0].Value, &v); err != nil {
		t.Fatalf("%s = %s: %v", key, resp.Kvs[0].Value, err)
	}
	return v.Meta
}

// simReport parses sim --check --json's stdout.
func simReport(t *testing.T, p *binProc) sim.CheckReport {
	t.Helper()
	p.mu.Lock()
	out := p.out.String()
	p.mu.Unlock()
	var r sim.CheckReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("report %q: %v\n%s", out, err, p.output())
	}
	return r
}

func waitExit(t *testing.T, p *binProc, within time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(within):
		t.Fatalf("still running after %s:\n%s", within, p.output())
		return nil
	}
}

// TestSimCheckBinary: `devgate dev` registers its demo backends with
// rehome=login, and `devgate sim --check` through its gateway sees every
// heartbeat answered once, in order, with the device's login, no switch,
// and exits 0, after --duration (JSON) or on SIGINT (text).
func TestSimCheckBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs processes")
	}
	bin := devgateBin(t)
	etcdAddr := freePort(t)
	dev := startBin(t, bin, false, "dev", "--listen", "127.0.0.1:0", "--etcd-listen", etcdAddr, "--backends", "2",
		"--admin-listen", freePort(t), "--admin-http-listen", freePort(t), "--log-level", "warn")
	line, _ := dev.await(t, "the gateway address", 0, func(l string) bool { return strings.HasPrefix(strings.TrimSpace(l), "gateway ") })
	gw := strings.Fields(line)[1]
	for _, id := range []string{"demo-1", "demo-2"} {
		if m := backendMeta(t, "http://"+etcdAddr, id); m[proxy.MetaRehome] != proxy.RehomeLogin {
			t.Fatalf("%s meta %v, want %s=%s", id, m, proxy.MetaRehome, proxy.RehomeLogin)
		}
	}

	const devices = 200
	p := startBin(t, bin, true, "sim", "--target", gw, "--devices", "200", "--check", "--interval", "50ms",
		"--duration", "2s", "--every", "500ms", "--json")
	if err := waitExit(t, p, 60*time.Second); err != nil {
		t.Fatalf("sim --check: %v\n%s", err, p.output())
	}
	r := simReport(t, p)
	if !r.Clean || r.Connected != devices || r.Logins != devices || r.Disconnects != 0 || r.Switches != 0 ||
		r.PerBackend["demo-1"]+r.PerBackend["demo-2"] != devices || r.Answered < devices || r.Answered != r.Sent ||
		r.InFlight != 0 || r.Interval != 50*time.Millisecond {
		t.Fatalf("report %+v\n%s", r, p.output())
	}
	p.await(t, "a live line", 0, func(l string) bool { return strings.Contains(l, "connected 200/200 |") })

	text := startBin(t, bin, false, "sim", "--target", gw, "--devices", "20", "--check", "--every", "200ms")
	text.await(t, "a live line with every device", 0, func(l string) bool { return strings.Contains(l, "connected 20/20 |") })
	syscall.Kill(text.cmd.Process.Pid, syscall.SIGINT)
	if err := waitExit(t, text, 20*time.Second); err != nil {
		t.Fatalf("sim --check after SIGINT: %v\n%s", err, text.output())
	}
	text.await(t, "the verdict", 0, func(l string) bool { return strings.HasPrefix(l, "OK: no disconnect") })

	if err := dev.stop(t); err != nil {
		t.Fatalf("dev exit: %v\n%s", err, dev.output())
	}
}

// TestSimCheckBackendKilledBinary: `devgate backend --rehome` registers
// rehome=login (without the flag, no meta); when the only backend is
// SIGKILLed, sim --check counts every device's disconnect and exits 1.
func TestSimCheckBackendKilledBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs processes")
	}
	bin := devgateBin(t)
	etcdAddr := freePort(t)
	endpoint := "http://" + etcdAddr
	dev := startBin(t, bin, false, "dev", "--listen", "127.0.0.1:0", "--etcd-listen", etcdAddr, "--backends", "0",
		"--admin-listen", freePort(t), "--admin-http-listen", freePort(t), "--log-level", "warn")
	line, _ := dev.await(t, "the gateway address", 0, func(l string) bool { return strings.HasPrefix(strings.TrimSpace(l), "gateway ") })
	gw := strings.Fields(line)[1]

	plain := startBin(t, bin, false, "backend", "--id", "plain", "--listen", "127.0.0.1:0", "--etcd", endpoint, "--log-level", "warn")
	plain.await(t, "registered", 0, func(l string) bool { return strings.HasPrefix(l, "registered ") })
	if m := backendMeta(t, endpoint, "plain"); len(m) != 0 {
		t.Fatalf("backend without --rehome: meta %v", m)
	}
	if err := plain.stop(t); err != nil {
		t.Fatalf("backend exit: %v\n%s", err, plain.output())
	}
	solo := startBin(t, bin, false, "backend", "--id", "solo", "--listen", "127.0.0.1:0", "--etcd", endpoint, "--rehome", "--log-level", "warn")
	solo.await(t, "registered", 0, func(l string) bool { return strings.HasPrefix(l, "registered ") })
	if m := backendMeta(t, endpoint, "solo"); m[proxy.MetaRehome] != proxy.RehomeLogin || len(m) != 1 {
		t.Fatalf("backend --rehome: meta %v", m)
	}

	const devices = 50
	p := startBin(t, bin, true, "sim", "--target", gw, "--devices", "50", "--check", "--interval", "50ms",
		"--backoff-min", "100ms", "--backoff-max", "500ms", "--timeout", "1s", "--every", "100ms", "--json")
	_, next := p.await(t, "every device on solo", 0, func(l string) bool {
		return strings.Contains(l, "connected 50/50 | solo 50 ")
	})
	solo.cmd.Process.Kill()
	p.await(t, "every device disconnected", next, func(l string) bool { return strings.Contains(l, "disconnects 50") })
	err := p.stop(t)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("sim --check after the backend died: %v, want exit status 1\n%s", err, p.output())
	}
	r := simReport(t, p)
	if r.Clean || r.Disconnects != devices || r.Connected != 0 || r.Switches != 0 || r.StaleAnswers != 0 {
		t.Fatalf("report %+v", r)
	}
	if err := dev.stop(t); err != nil {
		t.Fatalf("dev exit: %v\n%s", err, dev.output())
	}
}

func TestSimCheckUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"sim", "--check", "--hold", "1s"}, "devgate sim: --check and --hold are two modes: give one\n"},
		{[]string{"sim", "--duration", "1s"}, "devgate sim: --duration is for --check\n"},
		{[]string{"sim", "--check", "--duration", "-1s"}, "devgate sim: --duration must not be negative\n"},
	} {
		out, errOut, code := runBin(t, tc.args...)
		if code != exitUsage || out != "" || !strings.HasPrefix(errOut, tc.want) {
			t.Errorf("devgate %q: exit %d, stdout %q, stderr:\n%s\nwant exit 2 and stderr starting:\n%s", tc.args, code, out, errOut, tc.want)
		}
	}
}
