package registry

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/devgate/devgate/pkg/ring"
)

func TestKeys(t *testing.T) {
	var k Keys
	if got := k.Backend("n1"); got != "/devgate/default/backends/n1" {
		t.Fatalf("default layout: %s", got)
	}
	k = Keys{Prefix: "/x/", Cluster: "prod"}
	if k.Drain("n1") != "/x/prod/drains/n1" || k.Gateway("g") != "/x/prod/gateways/g" {
		t.Fatalf("layout: %s %s", k.Drain("n1"), k.Gateway("g"))
	}
	for key, want := range map[string]string{
		"/x/prod/backends/n1":     "backends n1",
		"/x/prod/drains/n1":       "drains n1",
		"/x/prod/backends/":       "",
		"/x/prod/other/n1":        "",
		"/x/production/backends/": "",
	} {
		kind, id, ok := splitKey(k, key)
		got := ""
		if ok {
			got = kind + " " + id
		}
		if got != want {
			t.Errorf("splitKey(%q) = %q, want %q", key, got, want)
		}
	}
}

func TestParseBackend(t *testing.T) {
	b, err := ParseBackend("n1", []byte(`{"addr":"10.1.2.3:9000","weight":200,"zone":"a","meta":{"impl":"netty"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if b.ID != "n1" || b.Addr != "10.1.2.3:9000" || b.Weight != 200 || b.Zone != "a" || b.Meta["impl"] != "netty" {
		t.Fatalf("parsed %+v", b)
	}
	if b, _ := ParseBackend("n1", []byte(`{"addr":"netty-1.ns.svc:9000"}`)); b.Weight != ring.DefaultWeight {
		t.Fatalf("default weight %d", b.Weight)
	}
	for name, v := range map[string]string{
		"not json":    `nope`,
		"no addr":     `{}`,
		"no port":     `{"addr":"10.0.0.1"}`,
		"port zero":   `{"addr":"10.0.0.1:0"}`,
		"port big":    `{"addr":"10.0.0.1:70000"}`,
		"unspecified": `{"addr":"[::]:9000"}`,
		"multicast":   `{"addr":"224.0.0.1:9000"}`,
		"bad host":    `{"addr":"a b:9000"}`,
		"weight":      `{"addr":"10.0.0.1:1","weight":10001}`,
		"neg weight":  `{"addr":"10.0.0.1:1","weight":-1}`,
		"meta":        `{"addr":"10.0.0.1:1","meta":{` + strings.Repeat(`"k":"v",`, 0) + metaN(MaxMeta+1) + `}}`,
		"too big":     `{"addr":"10.0.0.1:1","zone":"` + strings.Repeat("z", MaxValueSize) + `"}`,
	} {
		if _, err := ParseBackend("n1", []byte(v)); !errors.Is(err, ErrBadValue) {
			t.Errorf("%s: err = %v, want ErrBadValue", name, err)
		}
	}
	for _, id := range []string{"", "a/b", "a b", "\x00", strings.Repeat("x", 129)} {
		if _, err := ParseBackend(id, []byte(`{"addr":"10.0.0.1:1"}`)); !errors.Is(err, ErrBadValue) {
			t.Errorf("id %q accepted", id)
		}
	}
}

func metaN(n int) string {
	var sb strings.Builder
	for i := 0; i < n; i++ {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(`"k`)
		sb.WriteString(strings.Repeat("x", i))
		sb.WriteString(`":"v"`)
	}
	return sb.String()
}

func TestParseDrainAndGateway(t *testing.T) {
	d, err := ParseDrain("n1", []byte(`{"deadline":"2026-01-02T03:04:05Z","evictPerSecond":25.5,"reason":"upgrade"}`))
	if err != nil || d.EvictPerSecond != 25.5 || d.Deadline.Year() != 2026 {
		t.Fatalf("%+v %v", d, err)
	}
	if _, err := ParseDrain("n1", []byte(`{"evictPerSecond":-1}`)); !errors.Is(err, ErrBadValue) {
		t.Fatalf("negative pace accepted: %v", err)
	}
	if _, err := ParseGateway("g1", []byte(`{"admin":"nope"}`)); !errors.Is(err, ErrBadValue) {
		t.Fatalf("bad admin accepted: %v", err)
	}
}

// upd is an update with etcd confirming and every live backend routable.
func upd(g *panicGuard, live map[string]ring.Backend, now time.Time) map[string]ring.Backend {
	return g.update(live, len(live), now, true)
}

// The guard on its own, with a fake clock.
func TestPanicGuard(t *testing.T) {
	g := panicGuard{threshold: 0.5, window: 10 * time.Second, hold: 30 * time.Second}
	t0 := time.Unix(1000, 0)
	all := map[string]ring.Backend{}
	for _, id := range []string{"a", "b", "c", "d"} {
		all[id] = ring.Backend{ID: id, Weight: 100}
	}
	if h := upd(&g, all, t0); len(h) != 0 {
		t.Fatalf("held %v at start", h)
	}
	only := func(ids ...string) map[string]ring.Backend {
		m := map[string]ring.Backend{}
		for _, id := range ids {
			m[id] = all[id]
		}
		return m
	}
	// One by one within the window: 25%, 50% pass, 75% trips and holds all three.
	if h := upd(&g, only("a", "b", "c"), t0.Add(time.Second)); len(h) != 0 {
		t.Fatalf("25%% held %v", h)
	}
	if h := upd(&g, only("a", "b"), t0.Add(2*time.Second)); len(h) != 0 {
		t.Fatalf("50%% held %v", h)
	}
	if h := upd(&g, only("a"), t0.Add(3*time.Second)); len(h) != 3 || g.holds != 1 {
		t.Fatalf("75%%: held %v holds %d", h, g.holds)
	}
	// One comes back: it is live again, no longer held.
	if h := upd(&g, only("a", "d"), t0.Add(4*time.Second)); len(h) != 2 {
		t.Fatalf("after d returned: held %v", h)
	}
	// The hold ends.
	if h := upd(&g, only("a", "d"), t0.Add(34*time.Second)); len(h) != 0 {
		t.Fatalf("after the hold: held %v", h)
	}
	// Departures spread wider than the window never trip it.
	g2 := panicGuard{threshold: 0.5, window: 10 * time.Second, hold: 30 * time.Second}
	upd(&g2, all, t0)
	upd(&g2, only("a", "b", "c"), t0.Add(20*time.Second))
	upd(&g2, only("a", "b"), t0.Add(40*time.Second))
	if h := upd(&g2, only("a"), t0.Add(60*time.Second)); len(h) != 0 {
		t.Fatalf("slow departures held %v", h)
	}
	// A hold due to end while etcd cannot confirm, or with nothing routable
	// left, goes on; it ends once etcd confirms and something is left.
	g4 := panicGuard{threshold: 0.5, window: 10 * time.Second, hold: 30 * time.Second}
	upd(&g4, all, t0)
	if h := upd(&g4, only(), t0.Add(time.Second)); len(h) != 4 {
		t.Fatalf("all gone: held %v", h)
	}
	if h := g4.update(only(), 0, t0.Add(32*time.Second), true); len(h) != 4 || g4.extended != 1 {
		t.Fatalf("hold ended into an empty ring: held %v, extended %d", h, g4.extended)
	}
	if h := g4.update(only("a"), 1, t0.Add(64*time.Second), false); len(h) != 3 || g4.extended != 2 {
		t.Fatalf("hold ended unconfirmed: held %v, extended %d", h, g4.extended)
	}
	if h := g4.update(only("a"), 1, t0.Add(95*time.Second), true); len(h) != 0 {
		t.Fatalf("confirmed with a live backend: held %v", h)
	}
	// Negative threshold: never.
	g3 := panicGuard{threshold: -1, window: 10 * time.Second, hold: 30 * time.Second}
	upd(&g3, all, t0)
	if h := upd(&g3, only(), t0.Add(time.Second)); len(h) != 0 {
		t.Fatalf("disabled guard held %v", h)
	}
}

func FuzzParseBackend(f *testing.F) {
	f.Add("n1", []byte(`{"addr":"10.1.2.3:9000","weight":100,"zone":"a","meta":{"k":"v"}}`))
	f.Add("n/1", []byte(`{"addr":"[::1]:1"}`))
	f.Add("x", []byte(`{"addr":"h:65535","weight":10000}`))
	f.Add("p", []byte(`{"addr":"h:1","addrs":["h:2","h:1","[::1]:3"]}`))
	f.Fuzz(func(t *testing.T, id string, val []byte) {
		b, err := ParseBackend(id, val)
		if err != nil {
			if !errors.Is(err, ErrBadValue) {
				t.Fatalf("error not wrapping ErrBadValue: %v", err)
			}
			return
		}
		// Several addresses: addr first, each once, bounded.
		if len(b.Addrs) > 0 && (len(b.Addrs) < 2 || len(b.Addrs) > MaxAddrs+1 || b.Addrs[0] != b.Addr ||
			len(slices.Compact(slices.Sorted(slices.Values(b.Addrs)))) != len(b.Addrs)) {
			t.Fatalf("accepted %q with addrs %q", val, b.Addrs)
		}
		// Whatever passes must be usable in a ring.
		if _, err := ring.New(ring.ModeConsistent, []ring.Backend{b}); err != nil {
			t.Fatalf("accepted %q %q but the ring refuses it: %v", id, val, err)
		}
	})
}

func FuzzViewApply(f *testing.F) {
	k := Keys{}
	f.Add(k.Backend("n1"), []byte(`{"addr":"10.1.2.3:9000"}`))
	f.Add(k.Drain("n1"), []byte(`{"deadline":"2026-01-02T03:04:05Z","evictPerSecond":1}`))
	f.Add(k.Gateway("g"), []byte(`{"admin":"127.0.0.1:9090"}`))
	f.Fuzz(func(t *testing.T, key string, val []byte) {
		v := newView()
		_ = v.apply(k, key, val)
		if _, err := build(nil, v, nil, ring.ModeConsistent, 1, 1, time.Unix(0, 0)); err != nil {
			t.Fatalf("a view built from accepted values fails: %v", err)
		}
		_ = v.apply(k, key, nil)
		if len(v.backends)+len(v.drains)+len(v.gateways) != 0 {
			t.Fatal("delete left the key behind")
		}
	})
}
