package proxy

import (
	"sync"
)

// connTable indexes live connections by backend, so a drain or rebalance
// can find them without walking every connection.
type connTable struct {
	mu        sync.Mutex
	byBackend map[string]map[*conn]struct{}
	closedN   [2]uint64 // conn.n of the connections removed
	nextID    uint32    // ids of conns, in routing order
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
	t.nextID++
	c.id = t.nextID
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

// byID returns up to n connections of backend id (all backends if id is
// empty; n <= 0 means no bound).
func (t *connTable) byID(id string, n int) []*conn {
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

// all returns every connection, moving and closing ones too.
func (t *connTable) all() []*conn {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []*conn
	for _, set := range t.byBackend {
		for c := range set {
			out = append(out, c)
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
		if !c.closing.Load() && !c.moving.Load() && (keep == nil || keep(c)) {
			out = append(out, c)
		}
	}
	return out
}

// backendOf returns the backend c copies to now (a move changes it).
func (t *connTable) backendOf(c *conn) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return c.backendID
}

// rekey files c under backend id: it was moved there.
func (t *connTable) rekey(c *conn, id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if set := t.byBackend[c.backendID]; set != nil {
		if _, ok := set[c]; !ok {
			return // ended meanwhile
		}
		delete(set, c)
		if len(set) == 0 {
			delete(t.byBackend, c.backendID)
		}
	}
	c.backendID = id
	if c.moves < ^uint8(0) {
		c.moves++
	}
	set := t.byBackend[id]
	if set == nil {
		set = make(map[*conn]struct{})
		t.byBackend[id] = set
	}
	set[c] = struct{}{}
}
