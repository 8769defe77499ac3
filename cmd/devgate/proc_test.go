package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	adminv1 "github.com/devgate/devgate/api/devgate/admin/v1"
)

// Helpers for tests that run the built binary: devgate serve as a child
// process (stopped by PID), devgate ctl as another.

// syncBuffer is a log both the child's writer and the test read.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// child is a running devgate process.
type child struct {
	cmd  *exec.Cmd
	log  *syncBuffer
	done chan struct{}
	err  error // set when done is closed
}

// startChild runs bin args; the test's cleanup kills it by PID.
func startChild(t *testing.T, bin string, args ...string) *child {
	t.Helper()
	c := &child{cmd: exec.Command(bin, args...), log: &syncBuffer{}, done: make(chan struct{})}
	c.cmd.Stdout, c.cmd.Stderr = c.log, c.log
	c.cmd.Env = append(os.Environ(), "DEVGATE_TOKEN=", "DEVGATE_ADMIN_ADDR=")
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { c.err = c.cmd.Wait(); close(c.done) }()
	t.Cleanup(func() {
		c.cmd.Process.Signal(syscall.SIGKILL)
		<-c.done
		if t.Failed() {
			t.Logf("%s log:\n%s", strings.Join(args, " "), c.log.String())
		}
	})
	return c
}

// exited waits up to d for the process to end.
func (c *child) exited(d time.Duration) bool {
	select {
	case <-c.done:
		return true
	case <-time.After(d):
		return false
	}
}

// runCtlBin runs devgate ctl to completion and returns its output and
// exit code.
func runCtlBin(t *testing.T, bin string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"ctl"}, args...)...)
	cmd.Env = append(os.Environ(), "DEVGATE_TOKEN=", "DEVGATE_ADMIN_ADDR=")
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("devgate ctl: %v", err)
	}
	t.Logf("devgate ctl %s -> %d\n%s", strings.Join(args, " "), code, out)
	return string(out), code
}

// freeAddrOn returns an unused TCP address on ip.
func freeAddrOn(t *testing.T, ip string) string {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// writeFile writes content to name in dir and returns the path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// serveConfig is a devgate serve config for one replica on loopback.
func serveConfig(endpoint, prefix, id, admin, httpAddr, extraAdmin string) string {
	return fmt.Sprintf(`listen: 127.0.0.1:0
etcd:
  endpoints: [%s]
  prefix: %s
  cluster: c
  leaseTTL: 30s
gateway:
  id: %s
admin:
  listen: %s
  httpListen: %s
%s
log:
  level: info
`, endpoint, prefix, id, admin, httpAddr, extraAdmin)
}

// adminConn dials an admin port with a bearer token on every call.
func adminConn(t *testing.T, addr, token string) adminv1.AdminClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUnaryInterceptor(func(ctx context.Context, m string, req, reply any, cc *grpc.ClientConn, inv grpc.UnaryInvoker, o ...grpc.CallOption) error {
			if token != "" {
				ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
			}
			return inv(ctx, m, req, reply, cc, o...)
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return adminv1.NewAdminClient(conn)
}

// until polls cond every 50ms for up to d.
func until(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s: %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func netListen(ip string) (net.Listener, error) { return net.Listen("tcp", net.JoinHostPort(ip, "0")) }
