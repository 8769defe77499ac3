package proxy

import (
	"sync"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// deviceCache remembers, per device, the backend it last reached through
// this replica, its live connection and its flap window (flap.go), in one
// entry: a separate LRU for the flap counts cost about 170 bytes a device.
// It feeds the stickiness metric and closes a device's older connection
// when it logs in again (a half-open mobile connection), so the backend
// does not hold two sessions. It is also the index FindDevice and Kick
// look a device up in, at no extra memory per connection: unindexed counts
// the live connections it does not hold (pushed out by the LRU bound, or an
// older duplicate), and while there are any, a lookup walks the table
// instead (devices_find.go).
type deviceCache struct {
	mu        sync.Mutex
	lru       *simplelru.LRU[string, deviceEntry]
	unindexed int // live connections marked conn.unindexed
}

type deviceEntry struct {
	backend string
	live    *conn
	flap    flapWindow
}

// flapWindow is a device's login count in its current flap window.
type flapWindow struct {
	start int64 // unix nanoseconds: the window's start
	n     int32 // logins counted in it
}

func newDeviceCache(size int) *deviceCache {
	d := &deviceCache{}
	l, err := simplelru.NewLRU[string, deviceEntry](size, func(_ string, e deviceEntry) {
		d.lost(e.live) // called by Add, under d.mu
	})
	if err != nil { // only for size <= 0, which callers exclude
		panic(err)
	}
	d.lru = l
	return d
}

// priorEntry is a device's entry before a login: what restore puts back.
type priorEntry struct {
	backend string
	seen    bool
}

// login records c as the device's live connection. It returns the older
// live connection, if any, whether the device reached a different
// backend than the last time this replica saw it, and the entry before.
func (d *deviceCache) login(c *conn) (old *conn, moved bool, prior priorEntry) {
	d.mu.Lock()
	defer d.mu.Unlock()
	prev, _ := d.lru.Get(c.device)
	prior = priorEntry{backend: prev.backend, seen: prev.backend != ""} // an entry with only a flap count was never routed
	d.lru.Add(c.device, deviceEntry{backend: c.backendID, live: c, flap: prev.flap})
	if prev.live != c {
		d.lost(prev.live) // still open until it ends (replaced, or a kept duplicate)
	}
	return prev.live, prior.seen && prev.backend != c.backendID, prior
}

// restore undoes login for a connection that falls back to another owner
// before any byte moved: the device's entry is what it was before.
func (d *deviceCache) restore(c *conn, prior priorEntry) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if e, ok := d.lru.Peek(c.device); ok && e.live == c {
		if prior.seen || e.flap.n > 0 { // the flap count stays: the login happened
			d.lru.Add(c.device, deviceEntry{backend: prior.backend, flap: e.flap})
		} else {
			d.lru.Add(c.device, deviceEntry{}) // so the eviction callback sees no live connection lost
			d.lru.Remove(c.device)
		}
	}
}

// logout forgets c as the live connection but keeps the backend, which the
// stickiness check needs on the next login.
func (d *deviceCache) logout(c *conn) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if c.unindexed {
		c.unindexed = false
		d.unindexed--
	}
	if e, ok := d.lru.Peek(c.device); ok && e.live == c {
		d.lru.Add(c.device, deviceEntry{backend: e.backend, flap: e.flap})
	}
}

// rehomed records that c, the device's live connection, now reaches
// backend id.
func (d *deviceCache) rehomed(c *conn, id string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if e, ok := d.lru.Peek(c.device); ok && e.live == c {
		d.lru.Add(c.device, deviceEntry{backend: id, live: c, flap: e.flap})
	}
}

// countLogin counts a login of device in its flap window (a new window
// once window nanoseconds have passed since its start) and returns the
// count, which stops growing past limit.
func (d *deviceCache) countLogin(device string, now, window int64, limit int32) int32 {
	d.mu.Lock()
	defer d.mu.Unlock()
	e, _ := d.lru.Get(device)
	if e.flap.n == 0 || now-e.flap.start >= window {
		e.flap = flapWindow{start: now}
	}
	if e.flap.n < limit {
		e.flap.n++
	}
	d.lru.Add(device, e)
	return e.flap.n
}
