package proxy

// lost marks c, a live connection the cache no longer holds; d.mu is held.
func (d *deviceCache) lost(c *conn) {
	if c != nil && !c.unindexed {
		c.unindexed = true
		d.unindexed++
	}
}

// find returns the device's live connection the cache holds, and whether
// that answer is complete (no live connection is missing from the cache).
func (d *deviceCache) find(dev string) (c *conn, complete bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	e, _ := d.lru.Peek(dev)
	return e.live, d.unindexed == 0
}

// deviceConns returns the live connections of a device: from the device
// cache, or by walking the table while the cache misses some.
func (p *Proxy) deviceConns(dev string) []*conn {
	p.init() // p.devices is made there; an admin call may come before or alongside Serve
	if c, complete := p.devices.find(dev); complete {
		if c == nil {
			return nil
		}
		return []*conn{c}
	}
	t := &p.table
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []*conn
	for _, set := range t.byBackend {
		for c := range set {
			if c.device == dev {
				out = append(out, c)
			}
		}
	}
	return out
}
