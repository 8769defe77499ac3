//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	adminv1 "github.com/devgate/devgate/api/devgate/admin/v1"
	"github.com/devgate/devgate/internal/testenv"
	"github.com/devgate/devgate/pkg/sim"
)

// scenarioProxyV2: a Netty server that registers with meta proxy=v2 gets a
// PROXY v2 header from the gateway, and Netty's own HAProxyMessageDecoder
// reports the device's address; Go backends, which did not ask, get none.
func scenarioProxyV2(t *testing.T, c *cluster) {
	if c.jar == "" {
		testenv.Missing(t, "Java or libnetty-java missing: no Netty backend to decode PROXY headers (see .ci/run)")
	}
	const id = "netty-pp"
	p := startProc(c.root, c.dir, id, "java", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xmx256m", "-jar", c.jar,
		"--id", id, "--listen", "127.0.0.1:0", "--etcd", strings.Join(c.endpoints(), ","),
		"--ttl", fmt.Sprint(int(backendTTL.Seconds())), "--proxy-protocol")
	p.await(t, "registered ", 30*time.Second)
	defer func() {
		p.signal(syscall.SIGTERM)
		p.stop(10 * time.Second)
		c.awaitRing(4)
	}()
	c.awaitRing(5)

	// A device the ring gives to netty-pp, and one it gives to a Go backend.
	var ppDev, goDev string
	for i := 0; ppDev == "" || goDev == ""; i++ {
		dev := fmt.Sprintf("pp-%d", i)
		r, err := c.gateways[0].api.Lookup(c.ctx(5*time.Second), &adminv1.LookupRequest{Devid: dev})
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case r.Owner == id && ppDev == "":
			ppDev = dev
		case strings.HasPrefix(r.Owner, "go-") && goDev == "":
			goDev = dev
		}
	}
	// Straight to a replica from a chosen source address, so the address
	// Netty reports can be compared with the device's own.
	for _, g := range c.gateways {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.9")}, Timeout: 3 * time.Second}
		conn, err := d.Dial("tcp", g.listen)
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		conn.Write(sim.AppendFrame(nil, sim.TypeLogin, 1, 0, []byte(fmt.Sprintf(`{"devid":%q}`, ppDev))))
		var hdr [sim.HeaderLen]byte
		if _, err := io.ReadFull(conn, hdr[:]); err != nil {
			t.Fatalf("%s: %v", g.id, err)
		}
		body := make([]byte, int(hdr[4])<<8|int(hdr[5]))
		io.ReadFull(conn, body)
		var reply struct{ Backend, Client string }
		json.Unmarshal(body, &reply)
		if reply.Backend != id || reply.Client != conn.LocalAddr().String() {
			t.Fatalf("%s: Netty answered %q; want backend %s and client %s", g.id, body, id, conn.LocalAddr())
		}
		t.Logf("proxy v2 via %s: Netty's HAProxyMessageDecoder reports client %s = the device's address", g.id, reply.Client)
		conn.Close()
	}
	// A Go backend (no PROXY asked) still speaks plain frames through the balancer.
	conn, got, err := login(c.ctx(5*time.Second), c.lbAddr, sim.AppendFrame(nil, sim.TypeLogin, 1, 0, []byte(fmt.Sprintf(`{"devid":%q}`, goDev))))
	if err != nil || !strings.HasPrefix(got, "go-") {
		t.Fatalf("device of a Go backend: %q %v", got, err)
	}
	conn.Close()
}
