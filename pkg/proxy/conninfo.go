package proxy

import (
	"cmp"
	"net/netip"
	"slices"
	"time"

	"github.com/devgate/devgate/pkg/ring"
)

// ConnInfo is a live routed connection as the admin API shows it.
type ConnInfo struct {
	ID       uint32 // the replica's, in routing order (wraps)
	Device   string
	Backend  string         // the backend it copies to now
	Client   netip.AddrPort // the device's address, after a PROXY header
	Since    time.Time
	BytesIn  uint64 // device to backend, after the key frame
	BytesOut uint64 // backend to device (goroutines: not the reply read while dialling)
	Tries    int    // its backend's place in the device's owner order, from 1
	Moves    int    // times moved live to another backend
}

// ConnCursor is where a page of ListConns starts: after the connection
// routed at Since with ID (the zero value: from the first).
type ConnCursor struct {
	Since time.Time
	ID    uint32
}

// ConnFilter selects the connections ListConns returns.
type ConnFilter struct {
	Backend string        // only those to this backend; empty: any
	MinAge  time.Duration // only those routed at least this long ago
	After   ConnCursor
	Limit   int // at most this many; <= 0: no bound
}

// FindDevice returns the live connections of a device on this replica.
func (p *Proxy) FindDevice(device string) []ConnInfo {
	cs := p.deviceConns(device)
	out := make([]ConnInfo, 0, len(cs))
	for _, c := range cs {
		out = append(out, p.info(c))
	}
	sortInfos(out)
	return out
}

// Kick closes the live connections of a device on this replica with
// reason "kicked" (the reconnect notice goes first where one is
// configured and can be written, as for an eviction). It returns those it
// closed first.
func (p *Proxy) Kick(device string) []ConnInfo {
	var out []ConnInfo
	for _, c := range p.deviceConns(device) {
		info := p.info(c)
		if c.close(ReasonKicked) {
			out = append(out, info)
		}
	}
	sortInfos(out)
	return out
}

// ListConns returns the live connections f selects, in (Since, ID) order,
// and whether the limit cut the list. It walks the table: an admin call's
// cost, not the data path's.
func (p *Proxy) ListConns(f ConnFilter) (infos []ConnInfo, more bool) {
	now := time.Now()
	keep := func(c *conn) bool {
		return (f.Backend == "" || c.backendID == f.Backend) && now.Sub(c.since) >= f.MinAge &&
			cursorOf(c).after(f.After)
	}
	type entry struct {
		c   *conn
		cur ConnCursor
	}
	var cs []entry
	p.table.mu.Lock()
	for id, set := range p.table.byBackend {
		if f.Backend != "" && id != f.Backend {
			continue
		}
		for c := range set {
			if keep(c) {
				cs = append(cs, entry{c, cursorOf(c)})
			}
		}
	}
	p.table.mu.Unlock()
	slices.SortFunc(cs, func(a, b entry) int { return a.cur.cmp(b.cur) })
	if f.Limit > 0 && len(cs) > f.Limit {
		cs, more = cs[:f.Limit], true
	}
	infos = make([]ConnInfo, 0, len(cs))
	for _, e := range cs {
		infos = append(infos, p.info(e.c))
	}
	return infos, more
}

func cursorOf(c *conn) ConnCursor { return ConnCursor{Since: c.since, ID: c.id} }

func (a ConnCursor) cmp(b ConnCursor) int {
	if c := a.Since.Compare(b.Since); c != 0 {
		return c
	}
	return cmp.Compare(a.ID, b.ID)
}

func (a ConnCursor) after(b ConnCursor) bool { return b == (ConnCursor{}) || a.cmp(b) > 0 }

func sortInfos(s []ConnInfo) {
	slices.SortFunc(s, func(a, b ConnInfo) int {
		return ConnCursor{a.Since, a.ID}.cmp(ConnCursor{b.Since, b.ID})
	})
}

// info reads c for the admin API: its backend under the table's lock (a
// move changes it), its bytes from whoever copies it.
func (p *Proxy) info(c *conn) ConnInfo {
	p.table.mu.Lock()
	backend, moves, id := c.backendID, int(c.moves), c.id
	p.table.mu.Unlock()
	in, out := c.n[0].Load(), c.n[1].Load()
	if c.ev != nil {
		in, out = c.ev.written()
	}
	return ConnInfo{ID: id, Device: c.device, Backend: backend, Client: c.remote.addrPort(), Since: c.since,
		BytesIn: in, BytesOut: out, Tries: max(int(c.tries), 1), Moves: moves}
}

// ownerRank is b's place in key's owner order, from 1 (the goroutine
// path's tries; the loops count their own).
func ownerRank(r ring.Ring, key []byte, id string) uint8 {
	var stack [8]int
	bs := r.Backends()
	for i, idx := range r.Owners(key, 8, stack[:0]) {
		if bs[idx].ID == id {
			return uint8(i + 1)
		}
	}
	return 1
}
