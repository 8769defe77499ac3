package proxy

import (
	"sync/atomic"

	"github.com/devgate/devgate/pkg/ring"
)

// RingSource hands the proxy the ring to route a new connection on. It is
// read once per connection, so implementations must be cheap and safe for
// concurrent use; membership changes swap in a new immutable ring.
type RingSource interface {
	Ring() ring.Ring
}

// AtomicRing is a RingSource whose ring is replaced atomically with Store.
// The zero value holds no ring: connections are refused with reason
// "no_backends" until the first Store.
type AtomicRing struct {
	p atomic.Pointer[ringBox]
}

// ringBox lets an interface value live behind an atomic.Pointer.
type ringBox struct{ r ring.Ring }

// NewAtomicRing returns an AtomicRing holding r.
func NewAtomicRing(r ring.Ring) *AtomicRing {
	a := &AtomicRing{}
	a.Store(r)
	return a
}

// Store makes r the ring for new connections.
func (a *AtomicRing) Store(r ring.Ring) { a.p.Store(&ringBox{r}) }

// Ring returns the current ring, or nil before the first Store.
func (a *AtomicRing) Ring() ring.Ring {
	if b := a.p.Load(); b != nil {
		return b.r
	}
	return nil
}
