package proxy

// The table's index by device: what FindDevice and KickDevice look up.
// It costs a map entry per connection (the key is the connection's own
// device string) and nothing on the copy path.

// indexDevice files c under its device; t.mu is held.
func (t *connTable) indexDevice(c *conn) {
	if t.byDevice == nil {
		t.byDevice = make(map[string]*conn)
	}
	if _, ok := t.byDevice[c.device]; !ok {
		t.byDevice[c.device] = c
		return
	}
	if t.dups == nil {
		t.dups = make(map[*conn]struct{})
	}
	t.dups[c] = struct{}{}
}

// unindexDevice takes c out of the index; t.mu is held. A duplicate of
// the same device, if any, takes its place.
func (t *connTable) unindexDevice(c *conn) {
	if t.byDevice[c.device] != c {
		delete(t.dups, c)
		return
	}
	delete(t.byDevice, c.device)
	for d := range t.dups {
		if d.device == c.device {
			delete(t.dups, d)
			t.byDevice[d.device] = d
			return
		}
	}
}

// device returns the live connections of a device.
func (t *connTable) device(dev string) []*conn {
	t.mu.Lock()
	defer t.mu.Unlock()
	c, ok := t.byDevice[dev]
	if !ok {
		return nil
	}
	out := []*conn{c}
	for d := range t.dups {
		if d.device == dev {
			out = append(out, d)
		}
	}
	return out
}
