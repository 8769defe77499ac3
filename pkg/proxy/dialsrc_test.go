//go:build linux

package proxy

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/devgate/devgate/pkg/ring"
)

// notHere is a source address no host has (TEST-NET-1): binding it fails
// with EADDRNOTAVAIL, as a source out of ports does at connect.
var notHere = netip.MustParseAddr("192.0.2.1")

// A device whose dial finds no source port is refused as no_source_port:
// not a failed dial of the backend (no ejection, no other owner).
func TestNoSourcePortRefuses(t *testing.T) {
	bothPaths(t, func(t *testing.T) {
		c := newCluster(t, 2, func(p *Proxy) { p.SourceAddrs = []netip.Addr{notHere} })
		const n = 10
		for i := range n {
			conn, err := net.Dial("tcp", c.addr)
			if err != nil {
				t.Fatal(err)
			}
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := conn.Write(login(fmt.Sprintf("dev-%d", i))); err != nil {
				t.Fatal(err)
			}
			if b, err := io.ReadAll(conn); err != nil || len(b) > 0 {
				t.Fatalf("device %d: read %q, %v; want EOF at once", i, b, err)
			}
			conn.Close()
		}
		waitFor(t, "refusals counted", func() bool { return c.proxy.Stats().Closed[ReasonNoSourcePort] == n })
		s := c.proxy.Stats()
		if s.DialFailures != 0 || s.Fallbacks != 0 || s.Closed[ReasonDialFailed] != 0 {
			t.Errorf("dial failures %d, fallbacks %d, dial_failed %d: a local shortage counted against backends",
				s.DialFailures, s.Fallbacks, s.Closed[ReasonDialFailed])
		}
		if ej := c.proxy.Ejections(); len(ej) != 0 {
			t.Errorf("ejections %+v", ej)
		}
	})
}

// A source without ports is passed over: the dial takes the next one, and
// SourcePorts counts the connections per source while they are open.
func TestSourceAddrsSkipExhausted(t *testing.T) {
	bothPaths(t, func(t *testing.T) {
		a2, a3 := netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.3")
		c := newCluster(t, 1, func(p *Proxy) { p.SourceAddrs = []netip.Addr{notHere, a2, a3} })
		const n = 30
		conns := c.connectN(n)
		sp := c.proxy.SourcePorts()
		if sp[SourcePort{a2, "b1"}]+sp[SourcePort{a3, "b1"}] != n || sp[SourcePort{a2, "b1"}] == 0 || sp[SourcePort{a3, "b1"}] == 0 {
			t.Errorf("source ports %v, want %d over 127.0.0.2 and .3", sp, n)
		}
		if got := c.proxy.Stats().Closed[ReasonNoSourcePort]; got != 0 {
			t.Errorf("%d refused", got)
		}
		for _, cn := range conns {
			cn.Close()
		}
		waitFor(t, "ports given back", func() bool { return len(c.proxy.SourcePorts()) == 0 })
	})
}

// Paths vary the backend's ports first, then the sources, so both spread.
func TestPathOrder(t *testing.T) {
	p := &Proxy{SourceAddrs: []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")}}
	b := ringBackend("b1", "h:1", "h:2")
	var got []string
	for range 5 {
		n, k := p.pathStart(b)
		if n != 4 {
			t.Fatalf("%d paths, want 4", n)
		}
		path := p.pathAt(b, k)
		got = append(got, path.src.String()+">"+path.addr)
	}
	want := "[10.0.0.1>h:1 10.0.0.1>h:2 10.0.0.2>h:1 10.0.0.2>h:2 10.0.0.1>h:1]"
	if fmt.Sprint(got) != want {
		t.Errorf("paths %v, want %s", got, want)
	}
	if n, k := (&Proxy{}).pathStart(ringBackend("b2", "h:1")); n != 1 || k != 0 {
		t.Errorf("one path: %d %d", n, k)
	}
}

func ringBackend(id string, addrs ...string) ring.Backend {
	b := ring.Backend{ID: id, Addr: addrs[0]}
	if len(addrs) > 1 {
		b.Addrs = addrs
	}
	return b
}
