package proxy

import "hash/maphash"

// The table's index by device: what FindDevice and Kick look up. It is
// keyed by a 64-bit hash of the device id, not the id (a map slot of 16
// bytes instead of 24: the idle-device memory row, docs/access-log.md),
// and costs nothing on the copy path. One connection per hash; a
// device's other live ones (a duplicate login not yet closed, kept
// duplicates) and hash collisions wait in dups, which is nearly always
// empty.

var deviceSeed = maphash.MakeSeed()

func deviceHash(dev string) uint64 { return maphash.String(deviceSeed, dev) }

// indexDevice files c under its device; t.mu is held.
func (t *connTable) indexDevice(c *conn) {
	if t.byDevice == nil {
		t.byDevice = make(map[uint64]*conn)
	}
	h := deviceHash(c.device)
	if _, ok := t.byDevice[h]; !ok {
		t.byDevice[h] = c
		return
	}
	if t.dups == nil {
		t.dups = make(map[*conn]struct{})
	}
	t.dups[c] = struct{}{}
}

// unindexDevice takes c out of the index; t.mu is held. A connection
// waiting in dups under the same hash takes its place.
func (t *connTable) unindexDevice(c *conn) {
	h := deviceHash(c.device)
	if t.byDevice[h] != c {
		delete(t.dups, c)
		return
	}
	delete(t.byDevice, h)
	for d := range t.dups {
		if deviceHash(d.device) == h {
			delete(t.dups, d)
			t.byDevice[h] = d
			return
		}
	}
}

// device returns the live connections of a device.
func (t *connTable) device(dev string) []*conn {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []*conn
	if c, ok := t.byDevice[deviceHash(dev)]; ok && c.device == dev {
		out = append(out, c)
	}
	for d := range t.dups {
		if d.device == dev {
			out = append(out, d)
		}
	}
	return out
}
