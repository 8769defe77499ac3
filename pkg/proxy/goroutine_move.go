package proxy

// startMoveGo moves a connection copied by goroutines (TLS, idle timeout).
// Not done yet: it is evicted.
func (p *Proxy) startMoveGo(c *conn, mv *move) {
	c.close(Evicted(mv.cause))
	p.finishMove(c, mv, MoveNotMovable)
}
