//go:build e2e

package e2e

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/devgate/devgate/pkg/sim"
)

// badConn is one misbehaving client: what it sent and when its connection
// was closed.
type badConn struct {
	kind   string
	closed time.Duration // from the start of the dial
	err    error
}

// 7. Bad input through the balancer: every kind is closed at its limit with
// a counted reason, the backends never see it, and the replicas' goroutines
// and fds return to their baseline.
func scenarioBadInput(t *testing.T, c *cluster) {
	const idle = 5000
	// Baseline once the previous scenario's connections are gone.
	var base map[string]map[string]float64
	eventually(t, 30*time.Second, "no connection open on any replica", func() bool {
		base = c.metrics()
		return sum(base, "devgate_connections_active") == 0
	})
	time.Sleep(time.Second)
	base = c.metrics()
	hdr := func(n int) []byte { return []byte{1, 1, 0, 0, byte(n >> 8), byte(n)} }
	kinds := []struct {
		name, reason string
		n            int
		send         func(net.Conn) error
		limit        time.Duration // closed before this
		min          time.Duration // and not before this
	}{
		{"garbage", "not_json", 50, func(c net.Conn) error {
			_, err := c.Write(append(hdr(20), "\x00\xff\x13garbage-not-json!!"...))
			return err
		}, time.Second, 0},
		{"too_large", "too_large", 50, func(c net.Conn) error {
			_, err := c.Write(append(hdr(5000), `{"devid":"x"`...))
			return err
		}, time.Second, 0},
		{"no_devid", "no_key", 50, func(c net.Conn) error {
			body := `{"user":"nobody","os":"android"}`
			_, err := c.Write(append(hdr(len(body)), body...))
			return err
		}, time.Second, 0},
		{"slow_1Bps", "preread_timeout", 20, func(c net.Conn) error {
			body := `{"devid":"slow-device"}`
			frame := append(hdr(len(body)), body...)
			for _, b := range frame {
				if _, err := c.Write([]byte{b}); err != nil {
					return nil // closed by the gateway: expected
				}
				time.Sleep(time.Second)
			}
			return nil
		}, prereadTimeout + 1500*time.Millisecond, prereadTimeout},
		{"never_sends", "preread_timeout", idle, func(net.Conn) error { return nil },
			prereadTimeout + 3*time.Second, prereadTimeout},
	}
	var (
		mu      sync.Mutex
		results = map[string][]badConn{}
		wg      sync.WaitGroup
		sem     = make(chan struct{}, 512)
	)
	start := time.Now()
	for _, k := range kinds {
		for range k.n {
			wg.Go(func() {
				sem <- struct{}{}
				t0 := time.Now() // the gateway's deadline starts after this
				conn, err := net.DialTimeout("tcp", c.lbAddr, 5*time.Second)
				<-sem
				if err != nil {
					mu.Lock()
					results[k.name] = append(results[k.name], badConn{kind: k.name, err: err})
					mu.Unlock()
					return
				}
				defer conn.Close()
				conn.SetDeadline(t0.Add(20 * time.Second))
				go k.send(conn)
				_, err = io.Copy(io.Discard, conn) // nil at EOF
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					err = fmt.Errorf("not closed within 20 s")
				} else {
					err = nil // EOF or reset: closed by the gateway
				}
				mu.Lock()
				results[k.name] = append(results[k.name], badConn{kind: k.name, closed: time.Since(t0), err: err})
				mu.Unlock()
			})
		}
	}
	time.Sleep(prereadTimeout / 2) // the idle connections are open now
	during := c.metrics()
	wg.Wait()
	total := 0
	for _, k := range kinds {
		total += k.n
	}
	t.Logf("bad input: %d connections through the balancer, all done in %v", total, time.Since(start).Round(time.Millisecond))
	time.Sleep(500 * time.Millisecond)
	after := c.metrics()
	delta := func(key string) float64 { return sum(after, key) - sum(base, key) }
	wantReason := map[string]int{}
	for _, k := range kinds {
		rs := results[k.name]
		var ds []time.Duration
		failed := 0
		for _, r := range rs {
			if r.err != nil {
				failed++
				continue
			}
			ds = append(ds, r.closed)
		}
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		wantReason[k.reason] += k.n
		if len(ds) == 0 {
			t.Errorf("%s: no connection closed (%d errors: %v)", k.name, failed, rs[0].err)
			continue
		}
		minD, med, maxD := ds[0], ds[len(ds)/2], ds[len(ds)-1]
		t.Logf("bad input %-11s x%-5d reason %-15s closed after min %v / median %v / max %v (limit %v); not closed or dial errors %d",
			k.name, k.n, k.reason, minD.Round(time.Millisecond), med.Round(time.Millisecond), maxD.Round(time.Millisecond), k.limit, failed)
		if failed != 0 || maxD > k.limit || minD < k.min {
			t.Errorf("%s: %d failed, closed within [%v, %v], want within [%v, %v]", k.name, failed, minD, maxD, k.min, k.limit)
		}
	}
	for reason, n := range wantReason {
		got := delta(`devgate_connections_closed_total{reason="` + reason + `"}`)
		t.Logf("bad input: devgate_connections_closed_total{reason=%q} +%v over the replicas (want +%d)", reason, got, n)
		if got != float64(n) {
			t.Errorf("reason %s counted %v, want %d", reason, got, n)
		}
	}
	routed, dials := delta("devgate_routed_total"), delta("devgate_dial_failures_total")
	t.Logf("bad input: routed to a backend +%v, dial failures +%v (backends never see them when both are 0)", routed, dials)
	if routed != 0 {
		t.Errorf("%v bad connections were routed to a backend", routed)
	}
	// Goroutines and fds back to their baseline on every replica.
	var last map[string]map[string]float64
	d := eventually(t, 20*time.Second, "goroutines and fds back to baseline", func() bool {
		last = c.metrics()
		for id, m := range last {
			if m["go_goroutines"] > base[id]["go_goroutines"]+5 || m["process_open_fds"] > base[id]["process_open_fds"]+3 {
				return false
			}
		}
		return true
	})
	var lines []string
	for _, g := range c.gateways {
		b, m, l := base[g.id], during[g.id], last[g.id]
		lines = append(lines, fmt.Sprintf("%s goroutines %v -> %v -> %v, fds %v -> %v -> %v, open conns during %v",
			g.id, b["go_goroutines"], m["go_goroutines"], l["go_goroutines"],
			b["process_open_fds"], m["process_open_fds"], l["process_open_fds"], m["devgate_connections_active"]))
	}
	t.Logf("bad input: baseline -> during the flood -> after, regained %v after the last close: %s", d.Round(time.Millisecond), strings.Join(lines, "; "))
}

// 6. etcd faults.
func scenarioEtcdFaults(t *testing.T, c *cluster) {
	const n = 300
	baseline := c.simRun("s6-", n, 0)
	if baseline.Failed != 0 {
		t.Fatalf("baseline: %s", baseline)
	}
	same := func(rep sim.Report) (failed, moved int) {
		for i, conns := range rep.Backends {
			for _, b := range conns {
				if b == "" {
					failed++
				} else if b != baseline.Backends[i][0] {
					moved++
				}
			}
		}
		return
	}

	// a. SIGKILL one member (a follower): no visible effect.
	t.Run("a_kill_one_member", func(t *testing.T) {
		c.t = t
		l := c.leader()
		victim := (l + 1) % 3
		revs := c.revisions()
		c.etcd[victim].p.kill()
		rep := c.simRun("s6-", n, 1)
		failed, moved := same(rep)
		gws, err := c.listGateways(c.gateways[0])
		if err != nil {
			t.Fatal(err)
		}
		revs2 := c.revisions()
		t.Logf("etcd: SIGKILL member %s (leader %s): %d connections, %d failed, %d moved; ListGateways consistent=%v (%d gateways); ring revisions %v -> %v",
			c.etcd[victim].name, c.etcd[l].name, rep.Connections, failed, moved, gws.Consistent, len(gws.Gateways), revs, revs2)
		if failed != 0 || moved != 0 || !gws.Consistent || len(gws.Gateways) != 3 {
			t.Errorf("one member down: failed %d moved %d consistent %v gateways %d", failed, moved, gws.Consistent, len(gws.Gateways))
		}
		c.restartEtcd(c.etcd[victim])
		c.etcd[victim].p.await(t, "ready", 30*time.Second)
	})

	// b. Quorum lost for 30 s (two members SIGSTOPped): new connections of
	// devices to live backends keep succeeding, the ring stays.
	t.Run("b_quorum_lost_30s", func(t *testing.T) {
		c.t = t
		l := c.leader()
		if l < 0 {
			t.Fatal("no etcd leader")
		}
		stopped := []int{(l + 1) % 3, (l + 2) % 3}
		revs := c.revisions()
		// Four sets of device ids in turn: one set every 2 s would be
		// flapping devices (admission.flap: 10 logins a minute).
		var owners [4][]string
		for k := range owners {
			owners[k] = c.lookup(c.gateways[0], fmt.Sprintf("s6b%d-", k), n)
		}
		c.signalEtcd(syscall.SIGSTOP, stopped...)
		t0 := time.Now()
		conns, failed, moved, runs := 0, 0, 0, 0
		disconnected := map[string]bool{}
		ringChanged := 0
		for time.Since(t0) < 30*time.Second {
			k := runs % len(owners)
			rep := c.simRun(fmt.Sprintf("s6b%d-", k), n, 0)
			f, m := 0, 0
			for i, conns := range rep.Backends {
				for _, b := range conns {
					if b == "" {
						f++
					} else if b != owners[k][i] {
						m++
					}
				}
			}
			conns, failed, moved, runs = conns+rep.Connections, failed+f, moved+m, runs+1
			for id, mm := range c.metrics() {
				if mm["devgate_etcd_connected"] == 0 {
					disconnected[id] = true
				}
				if mm["devgate_ring_revision"] != revs[id] || mm[`devgate_ring_backends{state="active"}`] != 4 {
					ringChanged++
				}
			}
			time.Sleep(2 * time.Second)
		}
		c.signalEtcd(syscall.SIGCONT, stopped...)
		tCont := time.Now()
		t.Logf("etcd quorum lost %v (SIGSTOP %s, %s): %d sim runs, %d connections, %d failed, %d moved; replicas that reported etcd disconnected %v; ring changed in %d samples",
			time.Since(t0).Round(time.Millisecond), c.etcd[stopped[0]].name, c.etcd[stopped[1]].name, runs, conns, failed, moved, disconnected, ringChanged)
		if failed != 0 || moved != 0 || ringChanged != 0 {
			t.Errorf("quorum loss: failed %d moved %d ring changed %d", failed, moved, ringChanged)
		}
		// c. Watches resume: a new backend reaches every replica.
		c.startGoBackend("go-6")
		reg := time.Since(tCont)
		d := c.awaitRing(5)
		t.Logf("etcd back: go-6 started and registered %v after SIGCONT, in every replica's ring %v later", reg.Round(time.Millisecond), d.Round(time.Millisecond))
		c.backends["go-6"].p.stop(5 * time.Second)
		delete(c.backends, "go-6")
		c.awaitRing(4)
	})

	// d. Compaction while a gateway lags: gw-3 is paused while many keys are
	// written and the history compacted, then resumes.
	t.Run("d_compaction_while_lagging", func(t *testing.T) {
		c.t = t
		g := c.gateways[2]
		relists := c.metrics()[g.id]["devgate_registry_relists_total"]
		g.p.signal(syscall.SIGSTOP)
		t0 := time.Now()
		junk := strings.Repeat("x", 2000)
		var wg sync.WaitGroup
		for w := range 16 {
			wg.Go(func() {
				for i := w; i < 1600; i += 16 {
					c.cli.Put(c.ctx(5*time.Second), fmt.Sprintf("%se2e-junk/%04d", c.keys.Root(), i), junk)
				}
			})
		}
		wg.Wait()
		dr, err := c.cli.Delete(c.ctx(5*time.Second), c.keys.Root()+"e2e-junk/", clientv3.WithPrefix())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.cli.Compact(c.ctx(10*time.Second), dr.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
			t.Fatal(err)
		}
		paused := time.Since(t0)
		g.p.signal(syscall.SIGCONT)
		d := eventually(t, 30*time.Second, "replicas converge after compaction", func() bool {
			revs := c.revisions()
			return revs["gw-1"] == revs["gw-2"] && revs["gw-2"] == revs[g.id] && revs[g.id] >= float64(dr.Header.Revision)
		})
		gws, err := c.listGateways(c.gateways[0])
		if err != nil {
			t.Fatal(err)
		}
		relists2 := c.metrics()[g.id]["devgate_registry_relists_total"]
		t.Logf("compaction: %s paused %v while 1600 keys (2 KB) were written, deleted and compacted at %d; converged %v after SIGCONT; its relists %v -> %v; ListGateways consistent=%v revisions %v",
			g.id, paused.Round(time.Millisecond), dr.Header.Revision, d.Round(time.Millisecond), relists, relists2, gws.Consistent, c.revisions())
		if !gws.Consistent {
			t.Errorf("not consistent after compaction")
		}
	})

	// e. etcd restored from a backup with a lower revision: every replica
	// converges on the restored cluster.
	t.Run("e_restore_lower_revision", func(t *testing.T) {
		c.t = t
		// Back up: stop every member, copy its data, start again.
		for _, m := range c.etcd {
			m.p.stop(10 * time.Second)
		}
		for _, m := range c.etcd {
			if out, err := exec.Command("cp", "-a", m.dir, m.dir+".bak").CombinedOutput(); err != nil {
				t.Fatalf("backup: %v %s", err, out)
			}
		}
		for _, m := range c.etcd {
			c.restartEtcd(m)
		}
		for _, m := range c.etcd {
			m.p.await(t, "ready", 30*time.Second)
		}
		c.awaitRing(4)
		backupRev := c.etcdRevision()
		for i := range 50 {
			c.cli.Put(c.ctx(5*time.Second), fmt.Sprintf("%se2e-later/%d", c.keys.Root(), i), "later")
		}
		eventually(t, 20*time.Second, "replicas at the later revision", func() bool {
			revs := c.revisions()
			for _, r := range revs {
				if r < float64(backupRev+50) {
					return false
				}
			}
			return true
		})
		before := c.revisions()
		// Restore the backup.
		for _, m := range c.etcd {
			m.p.kill()
		}
		for _, m := range c.etcd {
			os.RemoveAll(m.dir)
			if err := os.Rename(m.dir+".bak", m.dir); err != nil {
				t.Fatal(err)
			}
		}
		t0 := time.Now()
		for _, m := range c.etcd {
			c.restartEtcd(m)
		}
		for _, m := range c.etcd {
			m.p.await(t, "ready", 30*time.Second)
		}
		restoredRev := c.etcdRevision()
		var gws []string
		d := eventually(t, 60*time.Second, "replicas converge on the restored revision", func() bool {
			revs := c.revisions()
			for _, r := range revs {
				if r > float64(restoredRev+20) || r == 0 {
					return false
				}
			}
			resp, err := c.listGateways(c.gateways[0])
			if err != nil || !resp.Consistent || len(resp.Gateways) != 3 {
				return false
			}
			gws = nil
			for _, g := range resp.Gateways {
				gws = append(gws, fmt.Sprintf("%s@%d", g.Id, g.RingRevision))
			}
			return true
		})
		d = time.Since(t0)
		c.awaitRing(4)
		rep := c.simRun("s6-", n, 0)
		failed, moved := same(rep)
		t.Logf("restore: backup at revision %d, replicas were at %v, restored cluster at %d; converged %v after restart: ListGateways consistent %v; sim %d failed %d moved",
			backupRev, before, restoredRev, d.Round(time.Millisecond), gws, failed, moved)
		if failed != 0 || moved != 0 {
			t.Errorf("after restore: %d failed, %d moved", failed, moved)
		}
	})
}

// etcdRevision is the cluster's current revision.
func (c *cluster) etcdRevision() int64 {
	var rev int64
	eventually(c.t, 20*time.Second, "etcd answers", func() bool {
		r, err := c.cli.Get(c.ctx(2*time.Second), "health-probe")
		if err != nil {
			return false
		}
		rev = r.Header.Revision
		return true
	})
	return rev
}
