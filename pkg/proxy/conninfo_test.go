package proxy

import (
	"bufio"
	"fmt"
	"net/netip"
	"testing"
	"time"
)

// A device's connection is found by its id with what the admin API shows,
// and kicked: closed with reason kicked, after the notice on the loops.
func TestFindAndKickDevice(t *testing.T) {
	bothPaths(t, func(t *testing.T) {
		c := newCluster(t, 2, func(p *Proxy) { p.EvictNotice = testNotice })
		conn, backend := c.connect("dev-find")
		defer conn.Close()
		r := bufio.NewReader(conn)
		waitFor(t, "proxied", func() bool { return c.proxy.Proxied() == 1 })
		ping := mkframe(2, "ping")
		if _, err := conn.Write(ping); err != nil {
			t.Fatal(err)
		}
		if _, _, err := readFrame(r); err != nil {
			t.Fatal(err)
		}
		if got := c.proxy.FindDevice("dev-other"); len(got) != 0 {
			t.Fatalf("FindDevice of an unknown device = %+v", got)
		}
		var info ConnInfo
		waitFor(t, "bytes counted both ways", func() bool {
			got := c.proxy.FindDevice("dev-find")
			if len(got) != 1 {
				t.Fatalf("FindDevice = %+v, want one connection", got)
			}
			info = got[0]
			return info.BytesIn >= uint64(len(ping)) && info.BytesOut >= uint64(len(ping))
		})
		local := netip.MustParseAddrPort(conn.LocalAddr().String())
		if info.Device != "dev-find" || info.Backend != backend || info.Client != local || info.Tries != 1 ||
			info.Moves != 0 || time.Since(info.Since) > time.Minute || info.ID == 0 {
			t.Fatalf("FindDevice = %+v; want backend %s, client %s, one try", info, backend, local)
		}
		kicked := c.proxy.Kick("dev-find")
		if len(kicked) != 1 || kicked[0].Device != "dev-find" {
			t.Fatalf("Kick = %+v, want the connection", kicked)
		}
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		after := readNotice(t, r)
		if onGoroutines(t) != (after == -1) {
			t.Fatalf("notice %d s on the %s path", after, pathOf(t))
		}
		waitFor(t, "closed", func() bool { return c.proxy.Proxied() == 0 })
		if n := c.proxy.Stats().Closed[ReasonKicked]; n != 1 {
			t.Fatalf("closed kicked = %d, want 1", n)
		}
		if got := c.proxy.FindDevice("dev-find"); len(got) != 0 {
			t.Fatalf("after the kick FindDevice = %+v", got)
		}
		if got := c.proxy.Kick("dev-find"); len(got) != 0 {
			t.Fatalf("second Kick = %+v, want none", got)
		}
	})
}

// Every live connection of a device is found while gateways keep
// duplicates, and the index forgets each as it closes.
func TestFindDeviceDuplicates(t *testing.T) {
	c := newCluster(t, 1, func(p *Proxy) { p.KeepDuplicates = true })
	a, _ := c.connect("dev-dup")
	b, _ := c.connect("dev-dup")
	defer b.Close()
	waitFor(t, "both proxied", func() bool { return c.proxy.Proxied() == 2 })
	if got := c.proxy.FindDevice("dev-dup"); len(got) != 2 || got[0].Client == got[1].Client {
		t.Fatalf("FindDevice = %+v, want both connections", got)
	}
	a.Close()
	waitFor(t, "one left", func() bool { return c.proxy.Proxied() == 1 })
	got := c.proxy.FindDevice("dev-dup")
	if len(got) != 1 || got[0].Client != netip.MustParseAddrPort(b.LocalAddr().String()) {
		t.Fatalf("after one closed FindDevice = %+v, want the other", got)
	}
}

// ListConns pages through every connection once, in routing order, and
// filters by backend and age.
func TestListConnsPages(t *testing.T) {
	c := newCluster(t, 2, nil)
	const n = 7
	c.connectN(n)
	var seen []ConnInfo
	var cur ConnCursor
	for pages := 0; ; pages++ {
		if pages > n {
			t.Fatal("paging does not end")
		}
		page, more := c.proxy.ListConns(ConnFilter{After: cur, Limit: 3})
		seen = append(seen, page...)
		if !more {
			break
		}
		last := page[len(page)-1]
		cur = ConnCursor{Since: last.Since, ID: last.ID}
	}
	if len(seen) != n {
		t.Fatalf("pages hold %d connections, want %d", len(seen), n)
	}
	byBackend := map[string]int{}
	for i, s := range seen {
		if want := fmt.Sprintf("dev-%d", i); s.Device != want {
			t.Fatalf("row %d is %s, want %s (routing order)", i, s.Device, want)
		}
		byBackend[s.Backend]++
	}
	for b, k := range byBackend {
		if got, _ := c.proxy.ListConns(ConnFilter{Backend: b}); len(got) != k {
			t.Fatalf("backend %s: %d connections listed, want %d", b, len(got), k)
		}
	}
	if got, _ := c.proxy.ListConns(ConnFilter{MinAge: time.Hour}); len(got) != 0 {
		t.Fatalf("min age 1h lists %d", len(got))
	}
}

func TestPackedAddr(t *testing.T) {
	for _, s := range []string{"127.0.0.1:9000", "[2001:db8::1]:443", "[::ffff:10.0.0.1]:1"} {
		a := netip.MustParseAddrPort(s)
		want := netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
		if got := packAddr(a).addrPort(); got != want {
			t.Fatalf("%s: round trip %s", s, got)
		}
	}
	if got := packAddr(netip.AddrPort{}).addrPort(); got.IsValid() {
		t.Fatalf("zero address round trips to %s", got)
	}
}

// A device is found even when the device cache no longer holds it (more
// devices than DeviceCacheSize): the lookup walks the table then.
func TestFindDevicePastTheCache(t *testing.T) {
	c := newCluster(t, 2, func(p *Proxy) { p.DeviceCacheSize = 2 })
	conns := c.connectN(5)
	for i := range 5 {
		dev := fmt.Sprintf("dev-%d", i)
		if got := c.proxy.FindDevice(dev); len(got) != 1 || got[0].Device != dev {
			t.Fatalf("FindDevice(%s) = %+v", dev, got)
		}
	}
	if got := c.proxy.Kick("dev-0"); len(got) != 1 {
		t.Fatalf("Kick(dev-0) = %+v", got)
	}
	waitFor(t, "kicked", func() bool { return c.proxy.Proxied() == 4 })
	c.proxy.devices.mu.Lock()
	lost := c.proxy.devices.unindexed
	c.proxy.devices.mu.Unlock()
	if lost != 2 { // dev-1 and dev-2 (dev-0 was one, and ended)
		t.Fatalf("unindexed = %d, want 2", lost)
	}
	for _, cn := range conns {
		cn.Close()
	}
	waitFor(t, "all closed, none left unindexed", func() bool {
		c.proxy.devices.mu.Lock()
		defer c.proxy.devices.mu.Unlock()
		return c.proxy.Proxied() == 0 && c.proxy.devices.unindexed == 0
	})
}
