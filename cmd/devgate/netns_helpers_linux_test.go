//go:build linux

package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/devgate/devgate/pkg/frame"
)

// A network namespace of its own for a test: its loopback, its ephemeral
// port range, fixed ports without colliding with anything outside.
type netns struct {
	name string
	fd   int // /run/netns/<name>, for setns
}

// sysSetns is setns(2)'s number (the syscall package lacks it on amd64).
var sysSetns = map[string]uintptr{"amd64": 308, "arm64": 268, "386": 346, "arm": 375}[runtime.GOARCH]

// newNetns creates a namespace with lo up and the ephemeral port range
// lo..hi, or skips the test where namespaces cannot be made.
func newNetns(t *testing.T, lo, hi int) *netns {
	t.Helper()
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("skipping: no ip(8) to create a network namespace")
	}
	if sysSetns == 0 {
		t.Skipf("skipping: setns number unknown on %s", runtime.GOARCH)
	}
	name := fmt.Sprintf("devgate-t19-%d-%d", os.Getpid(), time.Now().UnixNano()%1e6)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Skipf("skipping: cannot create a network namespace (needs root or CAP_SYS_ADMIN): %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	for _, args := range [][]string{
		{"ip", "link", "set", "lo", "up"},
		{"sysctl", "-w", fmt.Sprintf("net.ipv4.ip_local_port_range=%d %d", lo, hi)},
	} {
		if out, err := exec.Command("ip", append([]string{"netns", "exec", name}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v: %s", args, err, out)
		}
	}
	fd, err := syscall.Open("/run/netns/"+name, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	return &netns{name: name, fd: fd}
}

// do runs f on an OS thread moved into the namespace: the sockets f
// creates (listeners, dials) live there. The thread ends with f (it stays
// locked), so no other goroutine ever runs in the namespace by accident.
func (n *netns) do(t *testing.T, f func()) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if _, _, e := syscall.RawSyscall(sysSetns, uintptr(n.fd), syscall.CLONE_NEWNET, 0); e != 0 {
			errc <- fmt.Errorf("setns: %w", e)
			return
		}
		f()
		errc <- nil
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// holdBackend accepts connections on addr and holds them, counting those
// that sent a byte (a device routed to it).
type holdBackend struct {
	l      net.Listener
	mu     sync.Mutex
	conns  []net.Conn
	routed int
}

func startHoldBackend(t *testing.T, addr string) *holdBackend {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	b := &holdBackend{l: l}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			b.mu.Lock()
			b.conns = append(b.conns, c)
			b.mu.Unlock()
			go func() {
				var one [1]byte
				if n, _ := c.Read(one[:]); n == 1 {
					b.mu.Lock()
					b.routed++
					b.mu.Unlock()
				}
				io.Copy(io.Discard, c)
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		b.mu.Lock()
		for _, c := range b.conns {
			c.Close()
		}
		b.mu.Unlock()
	})
	return b
}

func (b *holdBackend) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.routed
}

// dialDevice connects from client address src (no port reserved: each
// client address has the narrowed port range to itself) and sends a login
// frame for device id. Call it inside the namespace.
func dialDevice(gw string, src netip.Addr, id string) (net.Conn, error) {
	d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0)),
		Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, 24, 1) }) // IP_BIND_ADDRESS_NO_PORT
			return serr
		}}
	c, err := d.Dial("tcp", gw)
	if err != nil {
		return nil, err
	}
	f, err := frame.DefaultConfig().Build(1, []byte(`{"devid":"`+id+`"}`))
	if err == nil {
		_, err = c.Write(f)
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// scrapeMetrics returns the samples of /metrics at httpAddr whose name
// starts with prefix, by their full text before the value. Call it inside
// the namespace: the request goes over a connection dialled on the
// caller's thread (http.Transport would dial on another goroutine).
func scrapeMetrics(httpAddr, prefix string) (map[string]float64, error) {
	c, err := net.DialTimeout("tcp", httpAddr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "GET /metrics HTTP/1.0\r\nHost: "+httpAddr+"\r\n\r\n"); err != nil {
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := make(map[string]float64)
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out, sc.Err()
}

// fdCount is how many descriptors process pid holds.
func fdCount(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// nsGateway is the real binary serving inside a namespace.
type nsGateway struct {
	pid    int
	stopFn func()
	once   sync.Once
	log    string // its log file
}

// stop ends it (SIGTERM, by PID) and returns its log.
func (g *nsGateway) stop(t *testing.T) string {
	t.Helper()
	g.once.Do(g.stopFn)
	return readFile(t, g.log)
}

// startNetnsGateway runs the real binary with config doc inside ns and
// stops it when the test ends.
func startNetnsGateway(t *testing.T, ns *netns, doc string) *nsGateway {
	t.Helper()
	bin := devgateBin(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "gw.yaml")
	if err := os.WriteFile(cfg, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "serve.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	// ip netns exec sets the namespace and execs the binary: same PID.
	srv := exec.Command("ip", "netns", "exec", ns.name, bin, "serve", "--config", cfg, "--grace", "1s")
	srv.Stdout, srv.Stderr = logf, logf
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- srv.Wait() }()
	g := &nsGateway{pid: srv.Process.Pid, log: logf.Name()}
	g.stopFn = func() {
		srv.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			srv.Process.Kill()
			<-exited
			t.Error("serve did not stop 20s after SIGTERM")
		}
	}
	t.Cleanup(func() {
		log := g.stop(t)
		if t.Failed() {
			t.Logf("serve log:\n%s", log)
		}
	})
	return g
}
