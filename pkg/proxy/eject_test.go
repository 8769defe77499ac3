//go:build linux

package proxy

import (
	"fmt"
	"net"
	"os"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/devgate/devgate/pkg/demo"
	"github.com/devgate/devgate/pkg/ring"
)

// blackhole is a listening socket with a full accept queue (SYNs to it are
// dropped) that can later start answering.
type blackhole struct {
	addr string
	fd   int
	b    *demo.Backend
	wg   sync.WaitGroup
}

func newBlackhole(t *testing.T, id string) *blackhole {
	t.Helper()
	addr := fullBacklogListener(t) // closes its fd and queued conns at cleanup
	h := &blackhole{addr: addr, b: &demo.Backend{ID: id}}
	// Find the listening fd fullBacklogListener made: the one bound to addr.
	for fd := 3; fd < 4096 && h.fd == 0; fd++ {
		sa, err := syscall.Getsockname(fd)
		if in, ok := sa.(*syscall.SockaddrInet4); err == nil && ok &&
			fmt.Sprintf("127.0.0.1:%d", in.Port) == addr {
			if v, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_ACCEPTCONN); err == nil && v == 1 {
				h.fd = fd
			}
		}
	}
	if h.fd == 0 {
		t.Fatal("blackhole: listening fd not found")
	}
	t.Cleanup(func() { h.b.Close(); h.wg.Wait() })
	return h
}

// answer makes the blackholed backend accept and serve from now on.
func (h *blackhole) answer(t *testing.T) {
	t.Helper()
	nfd, err := syscall.Dup(h.fd)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(nfd), "blackhole")
	l, err := net.FileListener(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	h.wg.Add(1)
	go func() { defer h.wg.Done(); h.b.Serve(l) }()
}

// setupTimes logs each device in (one at a time) and returns how long each
// took from dial to the login's answer, and the backends that answered.
func setupTimes(t *testing.T, c *cluster, devs []string) ([]time.Duration, []string) {
	t.Helper()
	var ds []time.Duration
	var got []string
	for _, d := range devs {
		start := time.Now()
		conn, b := c.connect(d)
		ds = append(ds, time.Since(start))
		got = append(got, b)
		conn.Close()
	}
	return ds, got
}

func p99(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[(len(s)*99+99)/100-1]
}

// devicesOwnedBy returns n devices whose ring owner is id, with their next owner.
func devicesOwnedBy(r ring.Ring, id string, n int) (devs, next []string) {
	for i := 0; len(devs) < n && i < 100000; i++ {
		d := fmt.Sprintf("dev-%d", i)
		o := r.Owners([]byte(d), 2, nil)
		if r.Backends()[o[0]].ID == id {
			devs, next = append(devs, d), append(next, r.Backends()[o[1]].ID)
		}
	}
	return devs, next
}

// A blackholed backend costs its devices the dial timeout until it is
// ejected; then they reach their next owner at once; when it answers
// again a trial dial ends the ejection and its devices come back to it.
func TestEjectBlackholedBackend(t *testing.T) {
	bothPaths(t, func(t *testing.T) {
		const dialTimeout = 500 * time.Millisecond
		h := newBlackhole(t, "b0")
		c := newCluster(t, 2, func(p *Proxy) {
			p.DialTimeout = dialTimeout
			p.Eject = Eject{Failures: 3, MinBackoff: 3 * time.Second, MaxBackoff: 6 * time.Second}
		})
		bs := append([]ring.Backend{{ID: "b0", Addr: h.addr}}, c.ring.Ring().Backends()...)
		r, err := ring.New(ring.ModeConsistent, bs)
		if err != nil {
			t.Fatal(err)
		}
		c.ring.Store(r)
		devs, next := devicesOwnedBy(r, "b0", 43)

		before, got := setupTimes(t, c, devs[:3])
		if !slices.Equal(got, next[:3]) {
			t.Fatalf("before ejection: devices reached %v, want their next owners %v", got, next[:3])
		}
		ej := c.proxy.Ejections()
		if len(ej) != 1 || ej[0].Backend != "b0" || !ej[0].Ejected || ej[0].Ejections != 1 {
			t.Fatalf("after 3 timeouts: ejections %+v, want b0 ejected once", ej)
		}
		after, got := setupTimes(t, c, devs[3:])
		if !slices.Equal(got, next[3:]) {
			t.Fatalf("ejected: devices reached %v, want their next owners %v", got, next[3:])
		}
		t.Logf("%s: p99 setup of b0's devices: %v before ejection, %v while ejected (%d devices)",
			pathOf(t), p99(before), p99(after), len(after))
		if p99(before) < dialTimeout || p99(after) >= dialTimeout/2 {
			t.Fatalf("p99 setup %v before, %v after ejection; want >= %v, then well under it",
				p99(before), p99(after), dialTimeout)
		}

		h.answer(t)
		deadline := time.Now().Add(20 * time.Second)
		for {
			conn, b := c.connect(devs[0])
			conn.Close()
			if b == "b0" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("b0 answers again but %s still reaches %s; ejections %+v", devs[0], b, c.proxy.Ejections())
			}
			time.Sleep(100 * time.Millisecond)
		}
		waitFor(t, "b0 no longer ejected", func() bool {
			for _, e := range c.proxy.Ejections() {
				if e.Backend == "b0" && e.Ejected {
					return false
				}
			}
			return true
		})
	})
}

// Two replicas on the same ring, one with the owner ejected and one not
// (yet): a device lands on the same backend through either.
func TestEjectSameBackendOnEveryReplica(t *testing.T) {
	h := newBlackhole(t, "b0")
	c := newCluster(t, 3, func(p *Proxy) {
		p.DialTimeout = 300 * time.Millisecond
		p.Eject = Eject{Failures: 1, MinBackoff: time.Minute}
	})
	bs := append([]ring.Backend{{ID: "b0", Addr: h.addr}}, c.ring.Ring().Backends()...)
	r, err := ring.New(ring.ModeConsistent, bs)
	if err != nil {
		t.Fatal(err)
	}
	c.ring.Store(r)
	other := &Proxy{Source: c.ring, DialTimeout: 300 * time.Millisecond, Eject: Eject{Failures: -1},
		MaxConnsPerIP: -1, AcceptRatePerIP: -1}
	otherAddr := startProxy(t, other)
	devs, next := devicesOwnedBy(r, "b0", 6)
	viaOther := &cluster{t: t, addr: otherAddr}
	for i, d := range devs {
		conn, b1 := c.connect(d)
		conn.Close()
		conn, b2 := viaOther.connect(d)
		conn.Close()
		if b1 != next[i] || b2 != next[i] {
			t.Fatalf("%s: replica with ejection -> %s, without -> %s; want both %s", d, b1, b2, next[i])
		}
	}
	if ej := other.Ejections(); len(ej) != 0 {
		t.Fatalf("ejection off, yet %+v", ej)
	}
}

// A trial dial that fails doubles the backoff, up to MaxBackoff.
func TestEjectBackoffDoubles(t *testing.T) {
	bothPaths(t, func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		refused := l.Addr().String()
		l.Close() // dials to it are refused at once
		c := newCluster(t, 1, func(p *Proxy) {
			p.Eject = Eject{Failures: 2, MinBackoff: 100 * time.Millisecond, MaxBackoff: 300 * time.Millisecond}
		})
		r, err := ring.New(ring.ModeConsistent, append([]ring.Backend{{ID: "b0", Addr: refused}}, c.ring.Ring().Backends()...))
		if err != nil {
			t.Fatal(err)
		}
		c.ring.Store(r)
		devs, _ := devicesOwnedBy(r, "b0", 1)
		backoff := func() time.Duration {
			for _, e := range c.proxy.Ejections() {
				if e.Backend == "b0" && e.Ejected {
					return e.Backoff
				}
			}
			return 0
		}
		for _, want := range []time.Duration{0, 100 * time.Millisecond, 200 * time.Millisecond, 300 * time.Millisecond, 300 * time.Millisecond} {
			conn, _ := c.connect(devs[0])
			conn.Close()
			if got := backoff(); got != want {
				t.Fatalf("backoff %v, want %v; %+v", got, want, c.proxy.Ejections())
			}
			if want > 0 {
				time.Sleep(want + 20*time.Millisecond) // the next login is the trial
			}
		}
		if g := c.proxy.GuardStats(); g.EjectedSkips != 0 {
			t.Fatalf("skips %d: every login after a backoff is a trial", g.EjectedSkips)
		}
	})
}

// The last owner a device may try is dialled even when ejected: ejection
// alone never refuses a device.
func TestEjectLastOwnerStillDialled(t *testing.T) {
	bothPaths(t, func(t *testing.T) {
		h := newBlackhole(t, "b0")
		p := &Proxy{Source: ringOf(t, ring.Backend{ID: "b0", Addr: h.addr}), DialTimeout: 300 * time.Millisecond,
			Eject: Eject{Failures: 1, MinBackoff: time.Minute}, MaxConnsPerIP: -1, AcceptRatePerIP: -1,
			Goroutines: onGoroutines(t)}
		c := &cluster{t: t, addr: startProxy(t, p)}
		conn, err := net.Dial("tcp", c.addr)
		if err != nil {
			t.Fatal(err)
		}
		conn.Write(login("d"))
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Read(make([]byte, 1)); err == nil {
			t.Fatal("answered by a blackholed backend")
		}
		conn.Close()
		waitFor(t, "ejected", func() bool { ej := p.Ejections(); return len(ej) == 1 && ej[0].Ejected })
		h.answer(t)
		conn, b := c.connect("d")
		conn.Close()
		if b != "b0" {
			t.Fatalf("reached %s", b)
		}
		waitFor(t, "ejection ended", func() bool { ej := p.Ejections(); return len(ej) == 1 && !ej[0].Ejected })
	})
}

// A backend that accepts and resets before its first byte fails dials as a
// refusal does: it is ejected, and later devices skip it.
func TestEjectResetBeforeFirstByte(t *testing.T) {
	bothPaths(t, func(t *testing.T) {
		c := newCluster(t, 1, func(p *Proxy) { p.Eject = Eject{Failures: 3, MinBackoff: time.Minute} })
		dying, accepted := resetBackend(t)
		r, err := ring.New(ring.ModeConsistent, []ring.Backend{{ID: "b0", Addr: dying}, {ID: "b1", Addr: c.addrs[0]}})
		if err != nil {
			t.Fatal(err)
		}
		c.ring.Store(r)
		devs, _ := devicesOwnedBy(r, "b0", 10)
		for _, d := range devs {
			conn, got := c.connect(d)
			conn.Close()
			if got != "b1" {
				t.Fatalf("%s answered by %s", d, got)
			}
		}
		g := c.proxy.GuardStats()
		if n := accepted.Load(); n != 3 || g.EjectedSkips != 7 {
			t.Fatalf("dying backend accepted %d, skips %d; want 3 then 7 skipped", n, g.EjectedSkips)
		}
	})
}

// A backend that leaves the ring is forgotten: no longer listed as ejected.
func TestEjectForgottenWhenGone(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := l.Addr().String()
	l.Close()
	c := newCluster(t, 1, func(p *Proxy) { p.Eject = Eject{Failures: 1, MinBackoff: time.Minute} })
	live := c.ring.Ring()
	r, err := ring.New(ring.ModeConsistent, append([]ring.Backend{{ID: "b0", Addr: refused}}, live.Backends()...))
	if err != nil {
		t.Fatal(err)
	}
	c.ring.Store(r)
	devs, _ := devicesOwnedBy(r, "b0", 1)
	conn, _ := c.connect(devs[0])
	conn.Close()
	if ej := c.proxy.Ejections(); len(ej) != 1 || !ej[0].Ejected {
		t.Fatalf("ejections %+v, want b0 ejected", ej)
	}
	c.ring.Store(live)
	if ej := c.proxy.Ejections(); len(ej) != 1 || ej[0].Ejected || ej[0].Ejections != 1 {
		t.Fatalf("after b0 left the ring: %+v, want only its count of ejections", ej)
	}
}

// A dial that failed for want of a local resource does not count against
// the backend.
func TestEjectIgnoresLocalErrors(t *testing.T) {
	p := &Proxy{Eject: Eject{Failures: 1}}
	p.init()
	b := ring.Backend{ID: "b", Addr: "127.0.0.1:1"}
	p.ejectFailed(b, &net.OpError{Op: "dial", Err: os.NewSyscallError("socket", syscall.EMFILE)})
	if ej := p.Ejections(); len(ej) != 0 {
		t.Fatalf("ejected for EMFILE: %+v", ej)
	}
	p.ejectFailed(b, syscall.ECONNREFUSED)
	if ej := p.Ejections(); len(ej) != 1 || !ej[0].Ejected {
		t.Fatalf("not ejected for a refusal: %+v", ej)
	}
}
