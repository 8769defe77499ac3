//go:build e2e

package e2e

import (
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// 9. Drain a gateway replica with `devgate ctl drain-gateway` (issue 12):
// it evicts its devices at the pace, they come back through the other
// replicas to the same backends, and the drained process stays up, not
// ready, until `ctl undrain-gateway` makes it take devices again.
func scenarioDrainGateway(t *testing.T, c *cluster) {
	const (
		n    = 900
		pace = 60.0
	)
	victim, via := c.gateways[1], c.gateways[0]
	f := startFleet(t, c.lbAddr, "s9-", n)
	cur := f.current()
	m, err := scrape(victim.http)
	if err != nil {
		t.Fatal(err)
	}
	held := int(m["devgate_connections_proxied"])
	t0 := time.Now()
	out, err := c.ctl("--addr", via.admin, "drain-gateway", victim.id, "--pace", "60", "--wait")
	took := time.Since(t0)
	t.Logf("ctl drain-gateway %s via %s (%v):\n%s", victim.id, via.id, took.Round(time.Millisecond), out)
	if err != nil {
		t.Fatalf("ctl drain-gateway: %v", err)
	}
	eventually(t, 30*time.Second, "every device connected again", func() bool { return f.connected() == n })
	time.Sleep(time.Second) // the old code had exited 1 by now

	closes := f.closesSince(t0)
	measured, span, maxWin := rate(closes)
	moved := 0
	for i, b := range f.current() {
		if b != cur[i] {
			moved++
		}
	}
	code, body := readyz(victim)
	st, err := c.listGateways(via)
	if err != nil {
		t.Fatal(err)
	}
	perReplica := map[string]int64{}
	for _, g := range st.Gateways {
		perReplica[g.Id] = g.Connections
	}
	t.Logf("drain-gateway %s: held %d of %d devices; %d evictions over %v = %.1f/s (pace %v/s, %+.1f%%), max in 1 s %d; moved between backends %d; login failures %d; now per replica %v; %s alive %v, /readyz %d %q",
		victim.id, held, n, len(closes), span.Round(time.Millisecond), measured, pace, 100*(measured-pace)/pace, maxWin,
		moved, f.failures(), perReplica, victim.id, victim.p.alive(), code, body)
	if !victim.p.alive() {
		t.Fatalf("%s exited after drain-gateway\n%s", victim.id, victim.p.tail(20))
	}
	if code != http.StatusServiceUnavailable || !strings.HasPrefix(body, "draining") {
		t.Errorf("%s /readyz while drained: %d %q", victim.id, code, body)
	}
	if perReplica[victim.id] != 0 {
		t.Errorf("%s still holds %d connections", victim.id, perReplica[victim.id])
	}
	if moved != 0 {
		t.Errorf("%d devices changed backend", moved)
	}
	if len(closes) != held {
		t.Errorf("%d connections closed, want the %d %s held", len(closes), held, victim.id)
	}
	if measured > pace*1.1 || measured < pace*0.5 || float64(maxWin) > pace*1.2+pace/5 {
		t.Errorf("eviction rate %.1f/s (max %d in 1 s), want about %v/s", measured, maxWin, pace)
	}

	// Undrain: ready again, and the balancer sends it devices again.
	out, err = c.ctl("--addr", via.admin, "undrain-gateway", victim.id)
	t.Logf("ctl undrain-gateway %s: %s", victim.id, out)
	if err != nil {
		t.Fatalf("ctl undrain-gateway: %v", err)
	}
	eventually(t, 10*time.Second, victim.id+" ready", func() bool { code, _ := readyz(victim); return code == http.StatusOK })
	time.Sleep(1500 * time.Millisecond) // HAProxy: rise 2 x 500 ms
	before, err := scrape(victim.http)
	if err != nil {
		t.Fatal(err)
	}
	rep := c.simRun("s9new-", 300, 0)
	after, err := scrape(victim.http)
	if err != nil {
		t.Fatal(err)
	}
	routed := after["devgate_routed_total"] - before["devgate_routed_total"]
	t.Logf("undrain: %s routed %v of %d new connections; sim failed %d", victim.id, routed, rep.Connections, rep.Failed)
	if routed == 0 || rep.Failed != 0 {
		t.Errorf("after undrain: %s routed %v new connections, sim failed %d", victim.id, routed, rep.Failed)
	}
	f.stop()
}

// ctl runs `devgate ctl` and returns its combined output.
func (c *cluster) ctl(args ...string) (string, error) {
	out, err := exec.Command(c.devgate, append([]string{"ctl"}, args...)...).CombinedOutput()
	return string(out), err
}

func readyz(g *gateway) (int, string) {
	cl := http.Client{Timeout: 2 * time.Second}
	resp, err := cl.Get("http://" + g.http + "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}
