//go:build linux

package proxy

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/devgate/devgate/pkg/demo"
	"github.com/devgate/devgate/pkg/ring"
)

const idleHelperEnv = "DEVGATE_IDLE_HELPER"

// TestHelperIdleProxy is the child of TestIdleDeviceCost: a proxy alone in
// its process, so the figures are the proxy's own. It prints its address,
// then answers each line "m" on stdin with a measurement, until "q".
func TestHelperIdleProxy(t *testing.T) {
	mode := os.Getenv(idleHelperEnv)
	if mode == "" {
		return
	}
	r, _ := ring.New(ring.ModeConsistent, []ring.Backend{{ID: "b1", Addr: os.Getenv("DEVGATE_IDLE_BACKEND")}})
	p := &Proxy{Source: NewAtomicRing(r), MaxConnsPerIP: -1, AcceptRatePerIP: -1, Goroutines: mode != "eventloop",
		FDReserve: -1} // the parent sizes the devices to the fd limit
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	go p.Serve(l)
	fmt.Println("addr", l.Addr())
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if in.Text() != "m" {
			break
		}
		out, _ := json.Marshal(measureSelf())
		fmt.Println(string(out))
	}
	p.Close()
	os.Exit(0)
}

type selfCost struct{ Heap, Stack, RSS, FDs, Allocs, AllocBytes int64 }

func measureSelf() selfCost {
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	ents, _ := os.ReadDir("/proc/self/fd")
	var rss int64
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				rss = kb << 10
			}
		}
	}
	return selfCost{Heap: int64(ms.HeapInuse), Stack: int64(ms.StackInuse), RSS: rss, FDs: int64(len(ents)),
		Allocs: int64(ms.Mallocs), AllocBytes: int64(ms.TotalAlloc)}
}

// TestIdleDeviceCost measures what an idle proxied device (login and one
// heartbeat) costs the proxy, on goroutines and on the loops:
//
//	DEVGATE_IDLE_DEVICES=5000 go test -run TestIdleDeviceCost -v ./pkg/proxy
func TestIdleDeviceCost(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("DEVGATE_IDLE_DEVICES"))
	if n <= 0 {
		t.Skip("set DEVGATE_IDLE_DEVICES")
	}
	bl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &demo.Backend{ID: "b1", MaxConns: -1, IdleTimeout: -1}
	done := make(chan struct{})
	go func() { b.Serve(bl); close(done) }()
	defer func() { b.Close(); <-done }()
	var lim syscall.Rlimit
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	for _, mode := range []string{"goroutines", "eventloop"} {
		n := n
		if perDev := 6; mode == "goroutines" && int64(n*perDev+100) > int64(lim.Cur) {
			// Splice pipes: 6 fds a device. Hold what the fd limit allows.
			n = (int(lim.Cur) - 100) / perDev
			t.Logf("goroutines: %d fds allowed; holding %d devices", lim.Cur, n)
		}
		c := idleCost(t, bl.Addr().String(), mode, n)
		t.Logf("%-10s %d devices: heap+stack %6.0f B/device (heap %.0f, stack %.0f), RSS %6.0f B/device, %.2f fds/device",
			mode, n, float64(c.Heap+c.Stack)/float64(n), float64(c.Heap)/float64(n), float64(c.Stack)/float64(n),
			float64(c.RSS)/float64(n), float64(c.FDs)/float64(n))
		t.Logf("%-10s allocated during login and one heartbeat: %.1f objects, %.0f B per device", mode, float64(c.Allocs)/float64(n), float64(c.AllocBytes)/float64(n))
	}
}

func idleCost(t *testing.T, backendAddr, mode string, n int) selfCost {
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperIdleProxy$")
	cmd.Env = append(os.Environ(), idleHelperEnv+"="+mode, "DEVGATE_IDLE_BACKEND="+backendAddr)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stdin.Write([]byte("q\n")); cmd.Wait() }()
	out := bufio.NewReader(stdout)
	line, _ := out.ReadString('\n')
	addr := strings.TrimSpace(strings.TrimPrefix(line, "addr "))
	measure := func() selfCost {
		stdin.Write([]byte("m\n"))
		line, err := out.ReadString('\n')
		var c selfCost
		if err != nil || json.Unmarshal([]byte(line), &c) != nil {
			t.Fatalf("child said %q, %v", line, err)
		}
		return c
	}
	device := func(i int) (net.Conn, error) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			return nil, err
		}
		conn.SetDeadline(time.Now().Add(20 * time.Second))
		r := bufio.NewReader(conn)
		for _, f := range [][]byte{login(fmt.Sprintf("dev-%d", i)), mkframe(2, `{"hb":1}`)} {
			if _, err := conn.Write(f); err != nil {
				return conn, err
			}
			if _, _, err := readFrame(r); err != nil {
				return conn, err
			}
		}
		conn.SetDeadline(time.Time{})
		return conn, nil
	}
	warm, err := device(-1) // start the loops and pools before the baseline
	if err != nil {
		t.Fatal(err)
	}
	warm.Close()
	time.Sleep(200 * time.Millisecond)
	before := measure()

	conns := make([]net.Conn, n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 32 {
				c, err := device(i)
				conns[i] = c
				if err != nil {
					mu.Lock()
					firstErr = firstOf(firstErr, err)
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	if firstErr != nil {
		t.Fatalf("%s: %v", mode, firstErr)
	}
	time.Sleep(time.Second)
	after := measure()
	return selfCost{Heap: after.Heap - before.Heap, Stack: after.Stack - before.Stack,
		RSS: after.RSS - before.RSS, FDs: after.FDs - before.FDs,
		Allocs: after.Allocs - before.Allocs, AllocBytes: after.AllocBytes - before.AllocBytes}
}

func firstOf(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// benchProxy starts a proxy (on the loops or goroutines) in front of a backend
// that serves each connection with serve, after reading the login, and
// returns a client connection that has logged in.
func benchProxy(b *testing.B, eventLoop bool, serve func(net.Conn)) net.Conn {
	return benchProxyDial(b, eventLoop, serve)()
}

// benchProxyDial is benchProxy returning a dial for more clients; they
// are closed at the end of the benchmark.
func benchProxyDial(b *testing.B, eventLoop bool, serve func(net.Conn)) func() net.Conn {
	b.Helper()
	bl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := bl.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				if _, err := io.ReadFull(c, make([]byte, len(login("dev-bench")))); err == nil {
					serve(c)
				}
			}()
		}
	}()
	r, _ := ring.New(ring.ModeConsistent, []ring.Backend{{ID: "raw", Addr: bl.Addr().String()}})
	p := &Proxy{Source: NewAtomicRing(r), Goroutines: !eventLoop, MaxConnsPerIP: -1, AcceptRatePerIP: -1,
		KeepDuplicates: true} // every client logs in as dev-bench
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	done := make(chan error, 1)
	go func() { done <- p.Serve(l) }()
	var mu sync.Mutex
	var clients []net.Conn
	b.Cleanup(func() {
		for _, c := range clients {
			c.Close()
		}
		p.Close()
		<-done
		bl.Close()
		wg.Wait()
	})
	return func() net.Conn {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		c.Write(login("dev-bench"))
		mu.Lock()
		clients = append(clients, c)
		mu.Unlock()
		return c
	}
}

var benchModes = []struct {
	name      string
	eventLoop bool
}{{"goroutines", false}, {"eventloop", true}}

// BenchmarkProxyBulk: one connection, 1 MiB per op, client to backend.
func BenchmarkProxyBulk(b *testing.B) {
	for _, m := range benchModes {
		b.Run(m.name, func(b *testing.B) {
			got := make(chan int64, 1)
			c := benchProxy(b, m.eventLoop, func(bc net.Conn) {
				n, _ := io.Copy(io.Discard, bc)
				got <- n
			})
			chunk := make([]byte, 1<<20)
			b.SetBytes(int64(len(chunk)))
			b.ResetTimer()
			for range b.N {
				if _, err := c.Write(chunk); err != nil {
					b.Fatal(err)
				}
			}
			c.(*net.TCPConn).CloseWrite()
			if n := <-got; n != int64(b.N)*int64(len(chunk)) {
				b.Fatalf("backend got %d bytes", n)
			}
		})
	}
}

// BenchmarkProxyPingPong: one connection, a 64-byte message echoed per op.
func BenchmarkProxyPingPong(b *testing.B) {
	for _, m := range benchModes {
		b.Run(m.name, func(b *testing.B) {
			c := benchProxy(b, m.eventLoop, func(bc net.Conn) { io.Copy(bc, bc) })
			msg := make([]byte, 64)
			b.ResetTimer()
			for range b.N {
				if _, err := c.Write(msg); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkProxyPingPong64: 64 connections at once, a 64-byte echo per op.
func BenchmarkProxyPingPong64(b *testing.B) {
	for _, m := range benchModes {
		b.Run(m.name, func(b *testing.B) {
			dial := benchProxyDial(b, m.eventLoop, func(bc net.Conn) { io.Copy(bc, bc) })
			b.SetParallelism((64 + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				c := dial()
				msg := make([]byte, 64)
				for pb.Next() {
					if _, err := c.Write(msg); err != nil {
						b.Error(err)
						return
					}
					if _, err := io.ReadFull(c, msg); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
