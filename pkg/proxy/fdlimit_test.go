package proxy

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/devgate/devgate/pkg/demo"
	"github.com/devgate/devgate/pkg/ring"
)

const fdHelperEnv = "DEVGATE_FD_HELPER"

// TestHelperFDLimitedProxy is the child of TestFileDescriptorExhaustion:
// a proxy and a backend in a process allowed 64 open files. It prints its
// address, serves until stdin closes, then prints its stats.
func TestHelperFDLimitedProxy(t *testing.T) {
	if os.Getenv(fdHelperEnv) == "" {
		return
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: 64, Max: 64}); err != nil {
		fmt.Println("setrlimit:", err)
		os.Exit(1)
	}
	bl, _ := net.Listen("tcp", "127.0.0.1:0")
	b := &demo.Backend{ID: "b1"}
	go b.Serve(bl)
	r, _ := ring.New(ring.ModeConsistent, []ring.Backend{{ID: "b1", Addr: bl.Addr().String()}})
	p := &Proxy{Source: NewAtomicRing(r), MaxConnsPerIP: -1, AcceptRatePerIP: -1, PrereadTimeout: time.Minute,
		FDReserve:  -1,                                    // run out of descriptors for real: the accept backoff is under test
		Goroutines: os.Getenv(fdHelperEnv) == "goroutine"} // the parent's path: the loops accept, or Serve does
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	go p.Serve(l)
	fmt.Println("addr", l.Addr())
	bufio.NewReader(os.Stdin).ReadString('\n')
	out, _ := json.Marshal(p.Stats())
	fmt.Println("stats", string(out))
	os.Exit(0)
}

// When file descriptors run out, the accept loop backs off instead of
// spinning, and serves again once they are free.
func TestFileDescriptorExhaustion(t *testing.T) {
	bothPaths(t, func(t *testing.T) {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperFDLimitedProxy$")
		cmd.Env = append(os.Environ(), fdHelperEnv+"="+pathOf(t))
		stdin, _ := cmd.StdinPipe()
		stdout, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { cmd.Process.Kill(); cmd.Wait() }()
		out := bufio.NewReader(stdout)
		line, err := out.ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "addr ") {
			t.Fatalf("child said %q, %v", line, err)
		}
		addr := strings.TrimSpace(strings.TrimPrefix(line, "addr "))

		// 100 silent clients: the child can hold about 50; the rest wait in the
		// listen backlog while its accepts fail with EMFILE.
		var silent []net.Conn
		for i := 0; i < 100; i++ {
			c, err := net.DialTimeout("tcp", addr, 2*time.Second)
			if err != nil {
				break
			}
			silent = append(silent, c)
		}
		time.Sleep(500 * time.Millisecond) // let it hit the limit and back off
		for _, c := range silent {
			c.Close()
		}
		// Free again: a device is served.
		deadline := time.Now().Add(10 * time.Second)
		for {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				c.SetDeadline(time.Now().Add(2 * time.Second))
				c.Write(login("dev-after"))
				_, _, rerr := readFrame(bufio.NewReader(c))
				c.Close()
				if rerr == nil {
					break
				}
			}
			if time.Now().After(deadline) {
				t.Fatal("no device served after the descriptors were freed")
			}
			time.Sleep(100 * time.Millisecond)
		}
		stdin.Write([]byte("\n"))
		line, _ = out.ReadString('\n')
		var s Stats
		if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "stats ")), &s); err != nil {
			t.Fatalf("child stats %q: %v", line, err)
		}
		t.Logf("child: %d accept errors while out of descriptors, %d accepted, %d routed", s.AcceptErrors, s.Accepted, s.Routed)
		if s.AcceptErrors == 0 {
			t.Fatal("the child never ran out of descriptors; the test did not test anything")
		}
		if s.AcceptErrors > 50 { // backoff doubles from 5ms: ~8 tries in the 0.5s out of descriptors
			t.Fatalf("%d accept errors in about half a second: the accept loop spins", s.AcceptErrors)
		}
		if s.Routed < 1 {
			t.Fatal("no device routed after recovery")
		}
	})
}

// Failed accepts from every loop and goroutine share one log line per
// interval instead of a line a second each.
func TestAcceptFailuresLoggedOncePerInterval(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	p := &Proxy{Source: &AtomicRing{}, Logger: zap.New(core)}
	p.init()
	var wg sync.WaitGroup
	for range 4 { // as 4 loops running out of descriptors together
		wg.Go(func() {
			for range 100 {
				p.acceptFailed(syscall.EMFILE, time.Second)
			}
		})
	}
	wg.Wait()
	if n := logs.FilterMessage("accept failed; retrying").Len(); n != 1 {
		t.Fatalf("%d log lines for 400 failed accepts, want 1", n)
	}
	if s := p.Stats(); s.AcceptErrors != 400 {
		t.Fatalf("counted %d accept errors, want 400", s.AcceptErrors)
	}
}

// The connection cap leaves FDReserve descriptors free: two per connection
// on the loops, six with goroutines (splice pipes).
func TestConnCapKeepsReserve(t *testing.T) {
	for _, tc := range []struct {
		maxConns, reserve int
		loops             bool
		nofile            uint64
		want              int64
	}{
		{-1, 0, true, 1024, (1024 - DefaultFDReserve) / 2},
		{-1, 0, false, 1024, (1024 - DefaultFDReserve) / 6},
		{100, 0, true, 1024, 100},
		{0, 0, true, 1 << 20, 100000},
		{-1, -1, false, 1024, -1},
		{-1, 24, true, 1024, 500},
		{-1, 0, false, 0, -1}, // limit unknown
		{-1, 0, true, 64, 1},
	} {
		p := &Proxy{Source: &AtomicRing{}, MaxConns: tc.maxConns, FDReserve: tc.reserve, Goroutines: !tc.loops}
		p.init()
		if got := p.connCapFor(tc.nofile); got != tc.want {
			t.Errorf("%+v: cap %d, want %d", tc, got, tc.want)
		}
	}
}
