package proxy

import (
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// conn is one proxied connection.
type conn struct {
	client, backend net.Conn
	device          string
	backendID       string
	since           time.Time
	ev              *evPair          // set when an event loop copies for this connection
	finWait         [2]time.Duration // after direction d's FIN (Proxy.finTimeouts)
	finArmed        [2]atomic.Bool   // direction d ended: the other runs under finWait[d]
	// The device cache's entry before login (restore puts it back), and
	// whether this connection (or the one it fell back from) counted a move.
	lastBackend string
	seen, moved bool
	n           [2]atomic.Uint64 // bytes copied by goroutines so far: client to backend, back

	once    sync.Once
	closing atomic.Bool // set by the first close: Evict must not pick it again
	mu      sync.Mutex
	reason  string
}

// setReason records why the connection ends; the first reason wins.
func (c *conn) setReason(r string) {
	c.mu.Lock()
	if c.reason == "" {
		c.reason = r
	}
	c.mu.Unlock()
}

// finTimedOut records that the pair was closed a FIN timeout after
// direction d ended: it replaces the EOF reason that FIN left.
func (c *conn) finTimedOut(d int) {
	c.mu.Lock()
	if c.reason == "" || c.reason == ReasonClientClosed || c.reason == ReasonBackendClosed {
		c.reason = finReasons[d]
	}
	c.mu.Unlock()
}

// finReasons are the close reasons of a FIN timeout, by the direction
// that ended first (0: client to backend).
var finReasons = [2]string{ReasonClientFinTimeout, ReasonServerFinTimeout}

func (c *conn) endReason() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reason
}

// close ends both sides at once; the copy loops see the error and return.
// On an event loop it only asks the loop, which closes both sockets and
// accounts for the connection. It reports whether this call was the
// first to close it.
func (c *conn) close(reason string) bool {
	first := c.closing.CompareAndSwap(false, true)
	c.setReason(reason)
	if c.ev != nil {
		c.ev.kill()
		return first
	}
	c.once.Do(func() {
		c.client.Close()
		c.backend.Close()
	})
	return first
}

// connTable indexes live connections by backend, so a drain or rebalance
// can find them without walking every connection.
type connTable struct {
	mu        sync.Mutex
	byBackend map[string]map[*conn]struct{}
	closedN   [2]uint64 // conn.n of the connections removed
}

func (t *connTable) add(c *conn) {
	t.mu.Lock()
	if t.byBackend == nil {
		t.byBackend = make(map[string]map[*conn]struct{})
	}
	set := t.byBackend[c.backendID]
	if set == nil {
		set = make(map[*conn]struct{})
		t.byBackend[c.backendID] = set
	}
	set[c] = struct{}{}
	t.mu.Unlock()
}

// remove takes c out and folds its byte counts into the totals, under the
// lock bytes takes, so their sum never goes back.
func (t *connTable) remove(c *conn) {
	t.mu.Lock()
	t.closedN[0] += c.n[0].Load()
	t.closedN[1] += c.n[1].Load()
	if set := t.byBackend[c.backendID]; set != nil {
		delete(set, c)
		if len(set) == 0 {
			delete(t.byBackend, c.backendID)
		}
	}
	t.mu.Unlock()
}

// bytes returns the bytes goroutines copied for connections closed and
// open, per direction. It walks the open ones: a scrape's cost, not the
// hot path's.
func (t *connTable) bytes() (in, out uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	in, out = t.closedN[0], t.closedN[1]
	for _, set := range t.byBackend {
		for c := range set {
			in += c.n[0].Load()
			out += c.n[1].Load()
		}
	}
	return in, out
}

// counts returns live connections per backend id.
func (t *connTable) counts() map[string]int {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string]int, len(t.byBackend))
	for id, set := range t.byBackend {
		out[id] = len(set)
	}
	return out
}

// pick returns up to n connections of backend id (all backends if id is
// empty; n <= 0 means no bound).
func (t *connTable) pick(id string, n int) []*conn {
	t.mu.Lock()
	defer t.mu.Unlock()
	if id != "" {
		return appendUpTo(nil, t.byBackend[id], n, nil)
	}
	var out []*conn
	for _, set := range t.byBackend {
		if out = appendUpTo(out, set, n, nil); n > 0 && len(out) >= n {
			break
		}
	}
	return out
}

// filter returns up to n connections (n <= 0: no bound) for which keep holds.
func (t *connTable) filter(n int, keep func(*conn) bool) []*conn {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []*conn
	for _, set := range t.byBackend {
		if out = appendUpTo(out, set, n, keep); n > 0 && len(out) >= n {
			break
		}
	}
	return out
}

func appendUpTo(out []*conn, set map[*conn]struct{}, n int, keep func(*conn) bool) []*conn {
	for c := range set {
		if n > 0 && len(out) >= n {
			break
		}
		if !c.closing.Load() && (keep == nil || keep(c)) {
			out = append(out, c)
		}
	}
	return out
}

// deviceCache remembers, per device, the backend it last reached through
// this replica and its live connection. It feeds the stickiness metric and
// closes a device's older connection when it logs in again (a half-open
// mobile connection), so the backend does not hold two sessions.
type deviceCache struct {
	mu  sync.Mutex
	lru *simplelru.LRU[string, deviceEntry]
}

type deviceEntry struct {
	backend string
	live    *conn
}

func newDeviceCache(size int) *deviceCache {
	l, err := simplelru.NewLRU[string, deviceEntry](size, nil)
	if err != nil { // only for size <= 0, which callers exclude
		panic(err)
	}
	return &deviceCache{lru: l}
}

// login records c as the device's live connection. It returns the older
// live connection, if any, and whether the device reached a different
// backend than the last time this replica saw it.
func (d *deviceCache) login(c *conn) (old *conn, moved bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	prev, ok := d.lru.Get(c.device)
	c.lastBackend, c.seen = prev.backend, ok
	d.lru.Add(c.device, deviceEntry{backend: c.backendID, live: c})
	if !ok {
		return nil, false
	}
	return prev.live, prev.backend != c.backendID
}

// restore undoes login for a connection that falls back to another owner
// before any byte moved: the device's entry is what it was before.
func (d *deviceCache) restore(c *conn) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if e, ok := d.lru.Peek(c.device); ok && e.live == c {
		if c.seen {
			d.lru.Add(c.device, deviceEntry{backend: c.lastBackend})
		} else {
			d.lru.Remove(c.device)
		}
	}
}

// logout forgets c as the live connection but keeps the backend, which the
// stickiness check needs on the next login.
func (d *deviceCache) logout(c *conn) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if e, ok := d.lru.Peek(c.device); ok && e.live == c {
		d.lru.Add(c.device, deviceEntry{backend: e.backend})
	}
}
