package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/devgate/devgate/internal/etcdserver"
	"github.com/devgate/devgate/pkg/demo"
	"github.com/devgate/devgate/pkg/registry"
)

// TestRehomeThroughBinary, through serve and ctl: with the rehome and
// rebalance sections, `ctl rebalance` and `ctl drain --wait` print how the
// connections they relocated ended (moved, evicted), those counts add up
// to the devices that had to go, and /metrics counts them in
// devgate_rehome_total. These demo backends do not opt in, so today every
// relocation is an eviction; the checks hold when devices move.
func TestRehomeThroughBinary(t *testing.T) {
	bin := devgateBin(t)
	etcd := etcdserver.StartT(t)
	cli := etcdserver.ClientT(t, etcd)
	const prefix = "/rehome-bin"
	keys := registry.Keys{Prefix: prefix, Cluster: "c"}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	addBackend := func(id string) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		b := &demo.Backend{ID: id}
		done := make(chan struct{})
		go func() { defer close(done); b.Serve(l) }()
		t.Cleanup(func() { b.Close(); <-done })
		reg, err := registry.RegisterBackend(ctx, cli, keys, id, registry.BackendValue{Addr: l.Addr().String()}, registry.RegisterOptions{TTL: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { reg.Close() })
	}
	addBackend("b1")
	addBackend("b2")

	dir := t.TempDir()
	listen, admin, httpAddr := freeAddrOn(t, "127.0.0.1"), freeAddrOn(t, "127.0.0.1"), freeAddrOn(t, "127.0.0.1")
	cfg := writeFile(t, dir, "gw.yaml", fmt.Sprintf(`listen: %s
etcd: {endpoints: [%s], prefix: %s, cluster: c}
gateway: {id: gw-1}
admin: {listen: %s, httpListen: %s}
limits: {maxConnectionsPerIP: -1, acceptRatePerIP: -1}
rehome: {enabled: true, timeout: 3s, maxBuffered: 32768, swallowReply: true, drainGrace: 500ms}
rebalance: {auto: false, perSecond: 100}
`, listen, etcd.Endpoint(), prefix, admin, httpAddr))
	if out, code := runConfigCheck(t, bin, cfg); code != 0 {
		t.Fatalf("config check: exit %d\n%s", code, out)
	}
	gw := startChild(t, bin, "serve", "--config", cfg, "--grace", "1s")
	until(t, 30*time.Second, "gateway ready", func() bool { code, _ := get(httpAddr, "/readyz"); return code == 200 })

	type dev struct {
		id, backend string
		closed      chan struct{}
	}
	var devs []*dev
	for i := 0; i < 40; i++ {
		d := &dev{id: fmt.Sprintf("bin-dev-%d", i), closed: make(chan struct{})}
		c, b, err := deviceLogin(listen, d.id)
		if err != nil {
			t.Fatal(err)
		}
		d.backend = b
		devs = append(devs, d)
		go func() { defer close(d.closed); defer c.Close(); io.Copy(io.Discard, c) }()
	}
	closed := func(d *dev) bool {
		select {
		case <-d.closed:
			return true
		default:
			return false
		}
	}

	// A third backend: its devices are misplaced until ctl rebalance.
	addBackend("b3")
	until(t, 30*time.Second, "b3 in the ring", func() bool {
		out, _ := runCtlBin(t, bin, "--addr", admin, "rebalance", "--dry-run")
		return !strings.Contains(out, "dry run: 0 misplaced")
	})
	out, code := runCtlBin(t, bin, "--addr", admin, "rebalance", "--pace", "200")
	m := regexp.MustCompile(`rebalance done: moved (\d+), evicted (\d+)(?:, (\d+) gone)? of (\d+) misplaced connections? on 1 gateway`).FindStringSubmatch(out)
	if code != 0 || m == nil || !strings.Contains(out, "misplaced ") || !strings.Contains(out, " moved ") {
		t.Fatalf("ctl rebalance: exit %d, want progress and a summary with moved and evicted:\n%s", code, out)
	}
	misplaced := atoi(m[4])
	if relocated := atoi(m[1]) + atoi(m[2]) + atoi(m[3]); misplaced == 0 || relocated != misplaced {
		t.Fatalf("ctl rebalance relocated %d of %d misplaced:\n%s", relocated, misplaced, out)
	}
	evictedByRebalance := 0
	for _, d := range devs {
		if closed(d) {
			evictedByRebalance++
		}
	}

	// A drain: ctl drain --wait shows moved and evicted to the end.
	onB1 := 0
	for _, d := range devs {
		if d.backend == "b1" && !closed(d) {
			onB1++
		}
	}
	out, code = runCtlBin(t, bin, "--addr", admin, "drain", "b1", "--deadline", "0", "--pace", "200", "--wait")
	m = regexp.MustCompile(`drained b1: no connections left \(moved (\d+), evicted (\d+)(?:, (\d+) gone)?\)`).FindStringSubmatch(out)
	if code != 0 || m == nil || !strings.Contains(out, "moved or evicted now at 200/s") {
		t.Fatalf("ctl drain --wait: exit %d, want moved and evicted counts:\n%s", code, out)
	}
	if relocated := atoi(m[1]) + atoi(m[2]) + atoi(m[3]); relocated != onB1 {
		t.Fatalf("drain relocated %d, b1 held %d:\n%s", relocated, onB1, out)
	}
	out, code = runCtlBin(t, bin, "--addr", admin, "backends")
	if code != 0 || !regexp.MustCompile(`draining b1: 0 connections left \(moving or evicting at 200/s; moved \d+, evicted \d+`).MatchString(out) {
		t.Fatalf("ctl backends: exit %d, want the drain's progress:\n%s", code, out)
	}

	// /metrics: every relocation is in devgate_rehome_total, by cause.
	_, metrics := get(httpAddr, "/metrics")
	sum := func(cause string) int {
		n := 0
		re := regexp.MustCompile(`(?m)^devgate_rehome_total\{cause="` + cause + `",result="[a-z_]+"\} (\d+)$`)
		for _, mm := range re.FindAllStringSubmatch(metrics, -1) {
			n += atoi(mm[1])
		}
		return n
	}
	if sum("rebalance") != misplaced || sum("drain") != onB1 {
		t.Fatalf("devgate_rehome_total: rebalance %d (want %d), drain %d (want %d)", sum("rebalance"), misplaced, sum("drain"), onB1)
	}
	for _, s := range []string{"devgate_rehome_in_progress 0", `devgate_rehome_pause_seconds_count{cause="drain"}`,
		`devgate_rehome_total{cause="backend_lost",result="moved"} 0`} {
		if !strings.Contains(metrics, s) {
			t.Fatalf("/metrics has no %q", s)
		}
	}
	t.Logf("rebalance relocated %d (closed %d devices), drain relocated %d", misplaced, evictedByRebalance, onB1)
	if !strings.Contains(gw.log.String(), "rebalance over") || !strings.Contains(gw.log.String(), "drain relocations over") {
		t.Fatalf("gateway log has no end lines:\n%s", gw.log.String())
	}
}

// The rehome and rebalance sections through `devgate config check`: a good
// file passes, each bad value fails with its key.
func TestConfigCheckRehome(t *testing.T) {
	bin := devgateBin(t)
	dir := t.TempDir()
	const base = "backends: [{id: b1, addr: '127.0.0.1:9101'}]\n"
	good := writeFile(t, dir, "good.yaml", base+"rehome: {enabled: true, replyFrame: {headerLength: 8, lengthFieldOffset: 6}}\nrebalance: {auto: true, perSecond: 20}\n")
	if out, code := runConfigCheck(t, bin, good); code != 0 || !strings.Contains(out, "OK") {
		t.Fatalf("good: exit %d\n%s", code, out)
	}
	for doc, want := range map[string]string{
		"rehome: {maxBuffered: 100}":                  "rehome.maxBuffered 100 is less than frame.maxFrameLength 4096",
		"rehome: {timeout: 1s, drainGrace: 2s}":       "rehome.drainGrace 2s must be shorter than rehome.timeout 1s",
		"rehome: {replyFrame: {byteOrder: sideways}}": `rehome.replyFrame.byteOrder "sideways"`,
		"rebalance: {perSecond: -3}":                  "rebalance.perSecond -3",
		"rehome: {timeout: -1s}":                      "negative duration -1s",
		"rehome: {enable: true}":                      `unknown field "enable" in rehome (did you mean "enabled"?)`,
	} {
		bad := writeFile(t, dir, "bad.yaml", base+doc+"\n")
		if out, code := runConfigCheck(t, bin, bad); code != 1 || !strings.Contains(out, want) {
			t.Errorf("%s: exit %d, want 1 and %q:\n%s", doc, code, want, out)
		}
	}
}

func runConfigCheck(t *testing.T, _, path string) (string, int) {
	t.Helper()
	stdout, stderr, code := runBin(t, "config", "check", path)
	return stdout + stderr, code
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}
