package proxy

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
)

// Stats is a point-in-time copy of the proxy's counters.
type Stats struct {
	Accepted     uint64             // connections accepted
	AcceptErrors uint64             // failed accepts (such as running out of file descriptors)
	Active       int64              // connections open now (prereading or proxied)
	Proxied      int64              // connections open now and routed to a backend
	Routed       uint64             // connections routed to a backend
	Fallbacks    uint64             // routed to a backend other than the owner (stickiness broken)
	DialFailures uint64             // failed dials, each try counted
	Moved        uint64             // devices that reconnected to a different backend than last time
	BytesIn      uint64             // client to backend (the preread bytes too), counted as copied
	BytesOut     uint64             // backend to client, counted as copied
	Closed       map[Reason]uint64  // connections ended, by reason
	Moving       int64              // moves of live devices in progress (Rehome)
	Rehomes      map[MoveKey]uint64 // moves ended, by cause and result
}

// MoveKey is a move's cause and how it ended.
type MoveKey struct {
	Cause  Cause
	Result MoveResult
}

type counters struct {
	accepted, acceptErrors, routed, fallbacks, dialFailures, moved, bytesIn, bytesOut atomic.Uint64
	active, proxied, moving                                                           atomic.Int64

	mu      sync.Mutex
	closed  map[Reason]uint64
	rehomes map[MoveKey]uint64
}

func (c *counters) countMove(k MoveKey) {
	c.mu.Lock()
	if c.rehomes == nil {
		c.rehomes = make(map[MoveKey]uint64)
	}
	c.rehomes[k]++
	c.mu.Unlock()
}

func (c *counters) count(reason Reason) {
	c.mu.Lock()
	if c.closed == nil {
		c.closed = make(map[Reason]uint64)
	}
	c.closed[reason]++
	c.mu.Unlock()
}

func (c *counters) snapshot() Stats {
	s := Stats{
		Accepted:     c.accepted.Load(),
		AcceptErrors: c.acceptErrors.Load(),
		Active:       c.active.Load(),
		Proxied:      c.proxied.Load(),
		Routed:       c.routed.Load(),
		Fallbacks:    c.fallbacks.Load(),
		DialFailures: c.dialFailures.Load(),
		Moved:        c.moved.Load(),
		BytesIn:      c.bytesIn.Load(),
		BytesOut:     c.bytesOut.Load(),
		Closed:       make(map[Reason]uint64),
		Moving:       c.moving.Load(),
		Rehomes:      make(map[MoveKey]uint64),
	}
	c.mu.Lock()
	for k, v := range c.closed {
		s.Closed[k] = v
	}
	for k, v := range c.rehomes {
		s.Rehomes[k] = v
	}
	c.mu.Unlock()
	return s
}

// MarshalText writes k as "cause/result", so Stats encodes as JSON.
func (k MoveKey) MarshalText() ([]byte, error) {
	return []byte(string(k.Cause) + "/" + string(k.Result)), nil
}

// UnmarshalText reads what MarshalText wrote.
func (k *MoveKey) UnmarshalText(b []byte) error {
	cause, result, ok := strings.Cut(string(b), "/")
	if !ok {
		return fmt.Errorf("move key %q: want cause/result", b)
	}
	k.Cause, k.Result = Cause(cause), MoveResult(result)
	return nil
}
