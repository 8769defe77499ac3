package proxy

import (
	"sort"
	"sync"
	"sync/atomic"
)

// Reasons a connection is refused or ends, as counted in Stats.Closed. Bad
// input from the preread carries the frame package's reason instead (see
// frame.Reason): bad_header, too_large, no_key, key_too_long, not_json,
// too_many_frames, preread_cap, bad_key, dup_key.
const (
	ReasonMaxConns       = "max_conns"        // refused: the connection limit was reached
	ReasonMaxConnsPerIP  = "max_conns_per_ip" // refused: the source address holds its limit
	ReasonRateLimited    = "rate_limited"     // refused: the source address opens connections too fast
	ReasonProxyUntrusted = "proxy_untrusted"  // a PROXY header from an address not trusted to send one
	ReasonProxyHeader    = "proxy_header"     // a missing or malformed PROXY header from a trusted address
	ReasonTLSHandshake   = "tls_handshake"    // the TLS handshake failed or timed out
	ReasonIdleTimeout    = "idle_timeout"     // proxied; nothing flowed either way for the idle timeout
	ReasonShutdown       = "shutdown"         // closed by Shutdown or Close
	ReasonEmpty          = "empty"            // client closed before sending a byte (LB health checks)
	ReasonClientGone     = "client_gone"      // client closed or reset in the middle of the first frame
	ReasonPrereadTimeout = "preread_timeout"  // no key frame within the preread deadline
	ReasonReadError      = "read_error"       // other socket error while prereading
	ReasonNoBackends     = "no_backends"      // the ring is empty
	ReasonDialFailed     = "dial_failed"      // every owner tried refused or timed out
	ReasonBackendWrite   = "backend_write"    // the backend took the connection but not the preread bytes
	ReasonClientClosed   = "client_closed"    // proxied; the client ended it
	ReasonBackendClosed  = "backend_closed"   // proxied; the backend ended it
	ReasonReplaced       = "replaced"         // proxied; the same device logged in again on this replica
	ReasonEvicted        = "evicted"          // proxied; closed by Evict: "evicted_<cause>" (drain, rebalance...)
)

// Reasons a half-closed pair ends: nothing moved for ClientFinTimeout after
// the device's FIN, or for ServerFinTimeout after the backend's.
const (
	ReasonClientFinTimeout = "client_fin_timeout"
	ReasonServerFinTimeout = "server_fin_timeout"
)

// Stats is a point-in-time copy of the proxy's counters.
type Stats struct {
	Accepted     uint64            // connections accepted
	AcceptErrors uint64            // failed accepts (such as running out of file descriptors)
	Active       int64             // connections open now (prereading or proxied)
	Proxied      int64             // connections open now and routed to a backend
	Routed       uint64            // connections routed to a backend
	Fallbacks    uint64            // routed to a backend other than the owner (stickiness broken)
	DialFailures uint64            // failed dials, each try counted
	Moved        uint64            // devices that reconnected to a different backend than last time
	BytesIn      uint64            // client to backend (the preread bytes too), counted as copied
	BytesOut     uint64            // backend to client, counted as copied
	Closed       map[string]uint64 // connections ended, by reason
}

// Reasons returns the reasons in Closed, sorted, for stable output.
func (s Stats) Reasons() []string {
	out := make([]string, 0, len(s.Closed))
	for r := range s.Closed {
		out = append(out, r)
	}
	sort.Strings(out)
	return out
}

type counters struct {
	accepted, acceptErrors, routed, fallbacks, dialFailures, moved, bytesIn, bytesOut atomic.Uint64
	active, proxied                                                                   atomic.Int64

	mu     sync.Mutex
	closed map[string]uint64
}

func (c *counters) close(reason string) {
	c.mu.Lock()
	if c.closed == nil {
		c.closed = make(map[string]uint64)
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
		Closed:       make(map[string]uint64),
	}
	c.mu.Lock()
	for k, v := range c.closed {
		s.Closed[k] = v
	}
	c.mu.Unlock()
	return s
}
