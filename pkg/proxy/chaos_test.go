//go:build linux

package proxy

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/devgate/devgate/pkg/ring"
)

// Clients misbehave at every step (silent, half a frame, garbage, reset
// mid-frame or mid-session, gone before the reply) while the ring changes
// under them, an owner refuses connections and another never answers, and
// connections are evicted and replaced; in the close variants the proxy is
// closed in the middle of it. Afterwards every accepted connection is
// counted closed exactly once, and no file descriptor is left: on both
// data paths. In the rehome variants connections are moved instead of
// evicted, to owners that refuse, never answer or take them.
func TestChaosAccountsForEveryConnection(t *testing.T) {
	for _, mode := range []string{"goroutines", "loops", "goroutines-close", "loops-close",
		"loops-rehome", "goroutines-rehome", "loops-rehome-close"} {
		t.Run(mode, func(t *testing.T) {
			closeEarly := strings.HasSuffix(mode, "-close")
			rehome := strings.Contains(mode, "rehome")
			c := newCluster(t, 2, func(p *Proxy) {
				p.Goroutines = !strings.HasPrefix(mode, "loops")
				p.PrereadTimeout = 300 * time.Millisecond
				p.DialTimeout = 300 * time.Millisecond
				p.Rehome = Rehome{Enabled: rehome, Timeout: 300 * time.Millisecond, DrainGrace: 100 * time.Millisecond}
			})
			var meta map[string]string
			if rehome {
				meta = map[string]string{MetaRehome: RehomeLogin}
			}
			dead, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			deadAddr := dead.Addr().String()
			dead.Close() // an owner whose port refuses
			withDead, err := ring.New(ring.ModeConsistent, []ring.Backend{
				{ID: "b1", Addr: c.addrs[0], Meta: meta}, {ID: "b2", Addr: c.addrs[1], Meta: meta},
				{ID: "dead", Addr: deadAddr, Meta: meta}, {ID: "stuck", Addr: fullBacklogListener(t), Meta: meta}})
			if err != nil {
				t.Fatal(err)
			}
			healthy, err := ring.New(ring.ModeConsistent, []ring.Backend{
				{ID: "b1", Addr: c.addrs[0], Meta: meta}, {ID: "b2", Addr: c.addrs[1], Meta: meta}})
			if err != nil {
				t.Fatal(err)
			}
			c.ring.Store(healthy)
			onlyB1, err := ring.New(ring.ModeConsistent, []ring.Backend{{ID: "b1", Addr: c.addrs[0], Meta: meta}})
			if err != nil {
				t.Fatal(err)
			}
			runtime.GC() // pipes the goroutine path pooled before are released
			fds := openFDs(t)

			stop := make(chan struct{})
			var churn sync.WaitGroup
			churn.Go(func() { // the ring, evictions
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					case <-time.After(7 * time.Millisecond):
					}
					switch i % 3 {
					case 0:
						c.ring.Store(withDead)
					case 1:
						c.ring.Store(healthy)
					default: // b2's devices move (or are evicted) to b1
						c.ring.Store(onlyB1)
					}
					if rehome {
						c.proxy.Relocate("", 2, "chaos", nil)
						c.proxy.RelocateMisplaced(1, "chaos", nil)
					} else {
						c.proxy.Evict("", 2, "chaos")
						c.proxy.EvictMisplaced(1, "chaos")
					}
				}
			})
			var wg sync.WaitGroup
			sem := make(chan struct{}, 32)
			const n = 400
			for i := range n {
				sem <- struct{}{}
				wg.Go(func() {
					defer func() { <-sem }()
					chaosClient(c.addr, i, rand.New(rand.NewPCG(uint64(i), 7)))
				})
				if closeEarly && i == n/2 {
					c.proxy.Close() // returns once every connection it accepted is closed
					s := c.proxy.Stats()
					var closed uint64
					for _, v := range s.Closed {
						closed += v
					}
					if s.Active != 0 || closed != s.Accepted {
						t.Fatalf("after Close: active %d, accepted %d, closed %v", s.Active, s.Accepted, s.Closed)
					}
				}
			}
			wg.Wait()
			close(stop)
			churn.Wait()
			c.ring.Store(healthy)

			waitFor(t, "every connection closed", func() bool {
				s := c.proxy.Stats()
				var closed uint64
				for _, v := range s.Closed {
					closed += v
				}
				return s.Active == 0 && s.Proxied == 0 && closed == s.Accepted && s.Moving == 0
			})
			s := c.proxy.Stats()
			t.Logf("accepted %d, routed %d, fallbacks %d, closed %v, moves %v", s.Accepted, s.Routed, s.Fallbacks, s.Closed, s.Rehomes)
			if !closeEarly && s.Accepted < n {
				t.Fatalf("accepted %d of %d", s.Accepted, n)
			}
			if c.proxy.evConns() != 0 {
				t.Fatalf("%d pairs left on the loops", c.proxy.evConns())
			}
			// The goroutine path's splice pipes sit in a sync.Pool: they are
			// closed by finalizers, after the GCs that drop them.
			waitFor(t, "fds back to baseline", func() bool { runtime.GC(); return openFDs(t) <= fds })
		})
	}
}

// chaosClient plays one device that does one of several things.
func chaosClient(addr string, i int, rnd *rand.Rand) {
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(3 * time.Second))
	frame := login(fmt.Sprintf("dev-%d", i%50)) // devices come back: replaced logins
	reset := func() { conn.(*net.TCPConn).SetLinger(0) }
	switch rnd.IntN(8) {
	case 0: // nothing: closed before a byte
	case 1: // silent until the preread deadline
		conn.Read(make([]byte, 1))
	case 2: // half a frame, then gone
		conn.Write(frame[:rnd.IntN(len(frame)-1)+1])
	case 3: // half a frame, then a reset
		conn.Write(frame[:rnd.IntN(len(frame)-1)+1])
		reset()
	case 4: // garbage
		conn.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
		conn.Read(make([]byte, 1))
	case 5: // a login, gone before the reply
		conn.Write(frame)
	default: // a session: login, heartbeats, then a close or a reset
		conn.Write(frame)
		r := bufio.NewReader(conn)
		if _, _, err := readFrame(r); err != nil {
			return
		}
		for range rnd.IntN(4) {
			if _, err := conn.Write(mkframe(2, `{}`)); err != nil {
				return
			}
			if _, _, err := readFrame(r); err != nil {
				return
			}
		}
		if rnd.IntN(2) == 0 {
			reset()
		}
	}
}
