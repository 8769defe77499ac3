package e2e

import (
	"bufio"
	"context"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/devgate/devgate/internal/etcdserver"
	"github.com/devgate/devgate/internal/testenv"
	"github.com/devgate/devgate/pkg/proxy"
	"github.com/devgate/devgate/pkg/registry"
	"github.com/devgate/devgate/pkg/sim"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// nettyJar builds the Java reference backend, or skips when Java or Netty
// is missing on this machine.
func nettyJar(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("java"); err != nil {
		testenv.Missing(t, "java not installed: the Netty backend test needs a JDK 17 (see .ci/run)")
	}
	if _, err := os.Stat("/usr/share/java/netty-common.jar"); err != nil {
		testenv.Missing(t, "Netty not installed: apt-get install -y libnetty-java (see .ci/run)")
	}
	out, err := exec.Command("make", "-s", "-C", "netty", "build").CombinedOutput()
	if err != nil {
		t.Fatalf("build the Netty backend: %v\n%s", err, out)
	}
	return "netty/build/netty-backend.jar"
}

type javaBackend struct {
	cmd   *exec.Cmd
	lines chan string
}

// startNetty runs the Java backend registering in etcd and waits until it
// says it registered.
func startNetty(t *testing.T, jar, id, endpoint string, ttl int) *javaBackend {
	t.Helper()
	b, _ := startNettyArgs(t, jar, id, endpoint, ttl)
	return b
}

// startNettyArgs is startNetty with more flags; it also returns the
// "registered" line.
func startNettyArgs(t *testing.T, jar, id, endpoint string, ttl int, extra ...string) (*javaBackend, string) {
	t.Helper()
	args := append([]string{"-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-jar", jar,
		"--id", id, "--listen", "127.0.0.1:0", "--etcd", endpoint, "--ttl", strconv.Itoa(ttl)}, extra...)
	cmd := exec.Command("java", args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if testing.Verbose() {
		cmd.Stderr = os.Stderr
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	b := &javaBackend{cmd: cmd, lines: make(chan string, 64)}
	go func() {
		defer close(b.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case b.lines <- sc.Text():
			default: // nobody is waiting; the test reads only what it needs
			}
		}
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return b, b.await(t, "registered ", 30*time.Second)
}

func (b *javaBackend) await(t *testing.T, prefix string, within time.Duration) string {
	t.Helper()
	timeout := time.After(within)
	for {
		select {
		case l, ok := <-b.lines:
			if !ok {
				t.Fatalf("Netty backend exited before printing %q", prefix)
			}
			if strings.HasPrefix(l, prefix) {
				return l
			}
		case <-timeout:
			t.Fatalf("Netty backend did not print %q within %s", prefix, within)
		}
	}
}

func waitRing(t *testing.T, w *registry.Watcher, within time.Duration, what string, cond func(*registry.Snapshot) bool) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < within {
		if s := w.Snapshot(); s != nil && cond(s) {
			return time.Since(start)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s: not within %s", what, within)
	return 0
}

func has(s *registry.Snapshot, id string) bool {
	_, ok := s.Member(id)
	return ok
}

// The Java reference backend registers through etcd's JSON gateway, the
// gateway routes devices to it, and it leaves on SIGTERM at once and after
// a SIGKILL when its lease expires.
func TestNettyBackendRegistersThroughJSONGateway(t *testing.T) {
	jar := nettyJar(t)
	etcd := etcdserver.StartT(t)
	cli := etcdserver.ClientT(t, etcd)
	ctx, cancel := context.WithCancel(context.Background())
	// The panic threshold is tested in pkg/registry; here every departure must show.
	w := &registry.Watcher{Client: cli, Settle: 20 * time.Millisecond, ProgressInterval: time.Second, PanicThreshold: -1}
	wdone := make(chan struct{})
	go func() { defer close(wdone); w.Run(ctx) }()
	defer func() { cancel(); <-wdone }()

	p := &proxy.Proxy{Source: w}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pdone := make(chan struct{})
	go func() { defer close(pdone); p.Serve(l) }()
	defer func() { p.Close(); <-pdone }()

	const ttl = 3
	n1 := startNetty(t, jar, "netty-1", etcd.Endpoint(), ttl)
	d := waitRing(t, w, time.Second, "netty-1 joins", func(s *registry.Snapshot) bool { return s.Ring.Len() == 1 && has(s, "netty-1") })
	t.Logf("netty-1 in the ring %s after it said registered", d)
	n2 := startNetty(t, jar, "netty-2", etcd.Endpoint(), ttl)
	waitRing(t, w, time.Second, "netty-2 joins", func(s *registry.Snapshot) bool { return s.Ring.Len() == 2 })

	// Devices land where the ring says, on the Java servers.
	cfg := sim.Config{Target: l.Addr().String(), Devices: 200, Reconnects: 2, Heartbeats: 1}
	rep, err := sim.Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Failed != 0 || rep.Sticky != cfg.Devices {
		t.Fatalf("through the gateway to Netty: %s", rep)
	}
	r := w.Ring()
	want := map[string]int{}
	for i := 0; i < cfg.Devices; i++ {
		want[r.Backends()[r.Lookup([]byte(cfg.DeviceID(i)))].ID]++
	}
	for id, n := range want {
		if rep.PerBackend[id] != n {
			t.Fatalf("landed %v, the ring says %v", rep.PerBackend, want)
		}
	}
	t.Logf("200 devices x 3 connections through the gateway: %v, all sticky", rep.PerBackend)

	// SIGTERM: the Java server deletes its key and revokes its lease.
	n2.cmd.Process.Signal(syscall.SIGTERM)
	d = waitRing(t, w, time.Second, "netty-2 leaves on SIGTERM", func(s *registry.Snapshot) bool { return !has(s, "netty-2") })
	n2.cmd.Wait()
	t.Logf("netty-2 out of the ring %s after SIGTERM", d)

	// SIGKILL: nobody deletes the key; the lease expires after its TTL.
	killed := time.Now()
	n1.cmd.Process.Kill()
	n1.cmd.Wait()
	waitRing(t, w, ttl*time.Second+2*time.Second, "netty-1 expires after SIGKILL", func(s *registry.Snapshot) bool { return !has(s, "netty-1") })
	gone := time.Since(killed)
	t.Logf("netty-1 out of the ring %s after SIGKILL (TTL %ds)", gone.Round(10*time.Millisecond), ttl)
	if gone < time.Duration(ttl)*time.Second*2/3-500*time.Millisecond {
		t.Fatalf("removed %s after SIGKILL, before its lease could have expired", gone)
	}
}
