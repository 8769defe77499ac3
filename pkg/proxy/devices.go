package proxy

import (
	"sync"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

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

// rehomed records that c, the device's live connection, now reaches
// backend id.
func (d *deviceCache) rehomed(c *conn, id string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if e, ok := d.lru.Peek(c.device); ok && e.live == c {
		d.lru.Add(c.device, deviceEntry{backend: id, live: c})
	}
}
