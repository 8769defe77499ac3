//go:build linux

package main

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/devgate/devgate/pkg/ring"
)

// Issue 19: a replica out of ephemeral ports. Each test runs the real
// binary in a network namespace of its own whose ephemeral range is
// narrowed to portRange ports, so one (source address, backend address)
// pair holds portRange connections.
const (
	portLo, portHi = 40000, 40199
	portRange      = portHi - portLo + 1
	gwAddr         = "127.0.0.1:20000"
	gwHTTP         = "127.0.0.1:20011"
	nsDeadline     = 40 * time.Second
)

// clientSrc spreads the devices' own connections over client addresses
// (127.0.1.x), each with its own portRange ports to the gateway.
func clientSrc(i int) netip.Addr { return netip.AddrFrom4([4]byte{127, 0, 1, byte(1 + i%8)}) }

// gwConfig is the gateway's configuration in the namespace.
func gwConfig(backends, sources string, eventLoop bool) string {
	return fmt.Sprintf(`listen: %s
gateway: {id: gw-ns}
admin: {listen: 127.0.0.1:20010, httpListen: %s}
eventLoop: %t
limits: {acceptRatePerIP: -1, dialTimeout: 5s}
backends:
%s
dial:
  sourceAddrs: [%s]
`, gwAddr, gwHTTP, eventLoop, backends, sources)
}

// nsDevices holds the devices a test opened.
type nsDevices struct{ conns []net.Conn }

func (d *nsDevices) close() {
	for _, c := range d.conns {
		c.Close()
	}
}

// open connects devices ids (inside the namespace).
func (d *nsDevices) open(t *testing.T, ids []string) {
	t.Helper()
	for _, id := range ids {
		c, err := dialDevice(gwAddr, clientSrc(len(d.conns)), id)
		if err != nil {
			t.Errorf("device %s: %v", id, err)
			return
		}
		d.conns = append(d.conns, c)
	}
}

// waitFor polls cond (which enters ns itself) until it holds or nsDeadline passes.
func waitFor(t *testing.T, ns *netns, what string, cond func() (bool, string)) {
	t.Helper()
	var ok bool
	var last string
	for deadline := time.Now().Add(nsDeadline); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		ok, last = cond()
		if ok {
			return
		}
	}
	t.Fatalf("%s: not within %v; last: %s", what, nsDeadline, last)
}

// metric reads one sample (name with labels, exactly as exported).
func metric(t *testing.T, ns *netns, sample string) float64 {
	t.Helper()
	var v float64
	var err error
	ns.do(t, func() {
		var m map[string]float64
		m, err = scrapeMetrics(gwHTTP, strings.SplitN(sample, "{", 2)[0])
		v = m[sample]
	})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

const noSourcePort = `devgate_connections_closed_total{reason="no_source_port"}`

func sourcePorts(src, backend string) string {
	return fmt.Sprintf(`devgate_source_ports_in_use{backend="%s",source="%s"}`, backend, src)
}

// ownedBy returns n device ids whose first owner is want among the static
// backends ids (all weight 100), from index from on.
func ownedBy(t *testing.T, ids []string, want string, n int) []string {
	t.Helper()
	bs := make([]ring.Backend, len(ids))
	for i, id := range ids {
		bs[i] = ring.Backend{ID: id, Addr: "127.0.0.1:1", Weight: 100}
	}
	r, err := ring.New(ring.ModeConsistent, bs)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for i := 0; len(out) < n && i < 100*n; i++ {
		id := fmt.Sprintf("dev-%d", i)
		if r.Backends()[r.Owners([]byte(id), 1, nil)[0]].ID == want {
			out = append(out, id)
		}
	}
	return out
}

// gatewayUp waits for the gateway's metrics in ns.
func gatewayUp(t *testing.T, ns *netns) {
	t.Helper()
	waitFor(t, ns, "gateway up", func() (bool, string) {
		var err error
		ns.do(t, func() { _, err = scrapeMetrics(gwHTTP, "devgate_") })
		return err == nil, fmt.Sprint(err)
	})
}

// One source address: portRange devices connect; the next are refused
// with no_source_port (closed at once, one log line), the gateway holds no
// descriptor for them, and they are not sent to another owner.
func TestBinaryNetnsOneSourceRefusesNoSourcePort(t *testing.T) {
	const extra = 50
	for _, loops := range []bool{true, false} {
		t.Run(fmt.Sprintf("eventLoop=%t", loops), func(t *testing.T) {
			ns := newNetns(t, portLo, portHi)
			var b1, b2 *holdBackend
			ns.do(t, func() {
				b1 = startHoldBackend(t, "127.0.0.1:20001")
				b2 = startHoldBackend(t, "127.0.0.1:20002") // the next owner: must get nothing
			})
			srv := startNetnsGateway(t, ns, gwConfig(`  - {id: b1, addr: 127.0.0.1:20001}
  - {id: b2, addr: 127.0.0.1:20002}`, "127.0.0.1", loops))
			gatewayUp(t, ns)
			ids := ownedBy(t, []string{"b1", "b2"}, "b1", portRange+extra)
			var devs nsDevices
			defer devs.close()
			ns.do(t, func() { devs.open(t, ids[:portRange]) })
			waitFor(t, ns, "b1 holds the range", func() (bool, string) {
				n := metric(t, ns, sourcePorts("127.0.0.1", "b1"))
				return b1.count() == portRange && n == portRange, fmt.Sprintf("backend %d, gauge %v", b1.count(), n)
			})
			if n := metric(t, ns, noSourcePort); n != 0 {
				t.Fatalf("%v refused before the range was used up", n)
			}
			fds := fdCount(t, srv.pid)

			var more nsDevices
			defer more.close()
			ns.do(t, func() { more.open(t, ids[portRange:]) })
			waitFor(t, ns, "the rest refused", func() (bool, string) {
				n := metric(t, ns, noSourcePort)
				return n == extra, fmt.Sprint(n)
			})
			for i, c := range more.conns { // closed by the gateway, not left hanging
				c.SetReadDeadline(time.Now().Add(nsDeadline))
				if _, err := c.Read(make([]byte, 1)); err != io.EOF {
					t.Fatalf("refused device %d: read %v, want EOF", i, err)
				}
			}
			if b1.count() != portRange || b2.count() != 0 {
				t.Errorf("b1 holds %d (want %d), b2 %d (want 0: no fallback for a local shortage)", b1.count(), portRange, b2.count())
			}
			var now int
			for deadline := time.Now().Add(nsDeadline); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
				if now = fdCount(t, srv.pid); now == fds {
					break
				}
			}
			if now != fds {
				t.Errorf("gateway holds %d descriptors after %d refusals, %d before", now, extra, fds)
			}
			t.Logf("%d devices on one source, %d refused no_source_port; gateway fds %d before the refusals, %d after", portRange, extra, fds, now)
			log := srv.stop(t)
			if n := strings.Count(log, "no local port left"); n < 1 || n > 2 {
				t.Errorf("%d no_source_port log lines for %d refusals within seconds, want 1 (rate-limited)", n, extra)
			}
			if strings.Contains(log, "backend ejected") {
				t.Error("a local port shortage ejected the backend")
			}
		})
	}
}

// spreadCase is a way out of one pair's port range: several source
// addresses, or a backend with several ports.
type spreadCase struct {
	name, backends, sources string
	listen                  []string // the backend's ports
	gauges                  []string // source_ports_in_use samples that share the devices
}

// Three source addresses, or a backend with three ports: 3 x portRange
// devices connect, spread evenly (a third each at half way and at the
// end), none refused.
func TestBinaryNetnsSpreadOverSourcesAndPorts(t *testing.T) {
	cases := []spreadCase{
		{name: "three-sources", backends: `  - {id: b1, addr: 127.0.0.1:20001}`,
			sources: "127.0.0.1, 127.0.0.2, 127.0.0.3", listen: []string{"127.0.0.1:20001"},
			gauges: []string{sourcePorts("127.0.0.1", "b1"), sourcePorts("127.0.0.2", "b1"), sourcePorts("127.0.0.3", "b1")}},
		{name: "three-ports", backends: `  - {id: b1, addrs: [127.0.0.1:20001, 127.0.0.1:20002, 127.0.0.1:20003]}`,
			sources: "127.0.0.1", listen: []string{"127.0.0.1:20001", "127.0.0.1:20002", "127.0.0.1:20003"},
			gauges: []string{sourcePorts("127.0.0.1", "b1")}},
	}
	const total = 3 * portRange
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ns := newNetns(t, portLo, portHi)
			var bs []*holdBackend
			ns.do(t, func() {
				for _, a := range tc.listen {
					bs = append(bs, startHoldBackend(t, a))
				}
			})
			startNetnsGateway(t, ns, gwConfig(tc.backends, tc.sources, true))
			gatewayUp(t, ns)
			ids := make([]string, total)
			for i := range ids {
				ids[i] = fmt.Sprintf("dev-%d", i)
			}
			var devs nsDevices
			defer devs.close()
			for _, n := range []int{total / 2, total} {
				ns.do(t, func() { devs.open(t, ids[len(devs.conns):n]) })
				waitFor(t, ns, fmt.Sprintf("%d devices routed", n), func() (bool, string) {
					got := 0
					for _, b := range bs {
						got += b.count()
					}
					return got == n, fmt.Sprint(got)
				})
				var per []string
				for _, b := range bs {
					per = append(per, fmt.Sprint(b.count()))
					if len(bs) > 1 && b.count() != n/len(bs) {
						t.Errorf("%d devices over %d ports: %s, want %d each", n, len(bs), strings.Join(per, " "), n/len(bs))
					}
				}
				for _, g := range tc.gauges {
					v := metric(t, ns, g)
					per = append(per, fmt.Sprintf("%s=%v", g, v))
					if want := float64(n / len(tc.gauges)); v != want {
						t.Errorf("%s = %v with %d devices, want %v", g, v, n, want)
					}
				}
				t.Logf("%d devices: %s", n, strings.Join(per, " "))
			}
			if n := metric(t, ns, noSourcePort); n != 0 {
				t.Errorf("%v devices refused no_source_port, want 0", n)
			}
		})
	}
}
