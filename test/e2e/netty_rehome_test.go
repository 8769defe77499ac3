package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/devgate/devgate/internal/etcdserver"
	"github.com/devgate/devgate/internal/testkit"
	"github.com/devgate/devgate/pkg/proxy"
	"github.com/devgate/devgate/pkg/registry"
	"github.com/devgate/devgate/pkg/sim"
)

// The Java reference backend keeps the rehome contract as the Go demo
// backend does: it registers rehome=login (unless --rehome=false), answers
// a numbered heartbeat with the devid of this connection's login, and when
// the gateway half-closes, answers what it read and then closes.
func TestNettyBackendRehomeContract(t *testing.T) {
	jar := nettyJar(t)
	etcd := etcdserver.StartT(t)
	cli := etcdserver.ClientT(t, etcd)
	_, reg := startNettyArgs(t, jar, "netty-1", etcd.Endpoint(), 5)
	startNettyArgs(t, jar, "netty-2", etcd.Endpoint(), 5, "--rehome=false")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for id, want := range map[string]string{
		"netty-1": fmt.Sprintf(`{"impl":"netty",%q:%q}`, proxy.MetaRehome, proxy.RehomeLogin),
		"netty-2": `{"impl":"netty"}`,
	} {
		resp, err := cli.Get(ctx, registry.Keys{}.Backend(id))
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("get %s: %v", id, err)
		}
		var v struct{ Meta json.RawMessage }
		if err := json.Unmarshal(resp.Kvs[0].Value, &v); err != nil || string(v.Meta) != want {
			t.Fatalf("%s value %s: meta %s, want %s (%v)", id, resp.Kvs[0].Value, v.Meta, want, err)
		}
	}

	var addr string
	for _, f := range strings.Fields(reg) {
		if a, ok := strings.CutPrefix(f, "addr="); ok {
			addr = a
		}
	}
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %q from %q: %v", addr, reg, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	const login = `{"devid":"dev-000001","token":"x"}`
	for _, tc := range []struct {
		typ        byte
		body, want string
	}{
		{sim.TypeHeartbeat, `{"seq":1}`, `{"backend":"netty-1","devid":"","seq":1}`},
		{sim.TypeLogin, login, `{"backend":"netty-1","devid":"dev-000001"}`},
		{sim.TypeHeartbeat, `{"seq":2}`, `{"backend":"netty-1","devid":"dev-000001","seq":2}`},
		{7, ` {"x":[1,{"seq":5}], "seq" : 9223372036854775807 } `, `{"backend":"netty-1","devid":"dev-000001","seq":9223372036854775807}`},
		{sim.TypeHeartbeat, `{"seq":-3}`, `{"backend":"netty-1","devid":"dev-000001","seq":-3}`},
		{sim.TypeHeartbeat, `{"seq":"0042"}`, `{"backend":"netty-1","devid":"dev-000001","seq":42}`},
		{sim.TypeHeartbeat, `{"seq":1.5}`, `{"seq":1.5}`},
		{sim.TypeHeartbeat, `{"seq":9223372036854775808}`, `{"seq":9223372036854775808}`},
		{sim.TypeHeartbeat, `{"seq":true}`, `{"seq":true}`},
		{sim.TypeHeartbeat, `{"seq":1,"seq":2}`, `{"seq":1,"seq":2}`},
		{sim.TypeHeartbeat, `{"hb":3}`, `{"hb":3}`},
		{sim.TypeLogin, `{"devid":"dev-2","seq":7}`, `{"backend":"netty-1","devid":"dev-2"}`},
		{sim.TypeHeartbeat, `{"seq":8}`, `{"backend":"netty-1","devid":"dev-2","seq":8}`},
	} {
		if _, err := c.Write(sim.AppendFrame(nil, tc.typ, 1, 0, []byte(tc.body))); err != nil {
			t.Fatal(err)
		}
		typ, body, err := testkit.ReadFrame(c)
		if err != nil || typ != tc.typ || string(body) != tc.want {
			t.Errorf("sent type %d %s: got type %d %s (%v), want %s", tc.typ, tc.body, typ, body, err, tc.want)
		}
	}

	// Half-close after many frames: every one answered, then EOF (the
	// backend closes its side once its answers are written).
	const n = 2000
	var req []byte
	for i := range n {
		req = sim.AppendFrame(req, sim.TypeHeartbeat, 1, 0, fmt.Appendf(nil, `{"seq":%d}`, i))
	}
	wrote := make(chan error, 1)
	go func() {
		_, err := c.Write(req)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		wrote <- err
	}()
	for i := range n {
		_, body, err := testkit.ReadFrame(c)
		if want := fmt.Sprintf(`{"backend":"netty-1","devid":"dev-2","seq":%d}`, i); err != nil || string(body) != want {
			t.Fatalf("answer %d of %d after the half-close: %s, %v; want %s", i, n, body, err, want)
		}
	}
	if k, err := c.Read(make([]byte, 1)); k != 0 || err != io.EOF {
		t.Fatalf("after the last answer: %d bytes, %v; want EOF (the backend closes)", k, err)
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}

	// sim's check mode passes against it, as against the Go demo backend.
	chk, err := sim.NewChecker(sim.CheckConfig{Config: sim.Config{Target: addr, Devices: 50, Interval: 20 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(context.Background())
	done := make(chan sim.CheckReport, 1)
	go func() { done <- chk.Run(rctx) }()
	for deadline := time.Now().Add(30 * time.Second); chk.Status().Answered < 50*5; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			break
		}
	}
	stop()
	if r := <-done; !r.Clean || r.Connected != 50 || r.PerBackend["netty-1"] != 50 || r.Answered < 50*5 {
		t.Fatalf("sim --check against the Java backend:\n%s", r)
	}
}
