package proxy

import (
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// The access log: one line per device connection that ends, routed or
// refused after the gateway began reading it (docs/access-log.md).

// AccessMode selects the connections the access log writes a line for.
type AccessMode uint8

// Access log modes.
const (
	AccessOff    AccessMode = iota // no lines
	AccessErrors                   // only ends that are not a normal close (errorReason)
	AccessAll                      // every end (non-error ones sampled by Sample)
)

// ErrAccessMode is an access log mode that is not off, errors or all.
var ErrAccessMode = errors.New("access log mode")

// ParseAccessMode parses "off", "errors" or "all".
func ParseAccessMode(s string) (AccessMode, error) {
	switch s {
	case "off":
		return AccessOff, nil
	case "errors":
		return AccessErrors, nil
	case "all":
		return AccessAll, nil
	}
	return AccessOff, fmt.Errorf("%w %q: want all, errors or off", ErrAccessMode, s)
}

// AccessLog writes the access lines. The zero value (or nil) writes none.
type AccessLog struct {
	Logger  *zap.Logger // its lines, at info; nil: none
	Mode    AccessMode
	Sample  int    // in AccessAll, keep 1 in Sample lines of normal closes; <= 1: all
	Gateway string // this replica's id, in every line

	n atomic.Uint64 // normal closes seen, for the sample
}

// accessMsg is the message of every access line.
const accessMsg = "connection closed"

// errorReason says whether an end is worth a line in AccessErrors: not a
// close by either side, an operator, a drain or shutdown, nor an empty
// connection (a load balancer's health check).
func errorReason(r Reason) bool {
	switch r {
	case ReasonClientClosed, ReasonBackendClosed, ReasonReplaced, ReasonShutdown, ReasonKicked, ReasonEmpty:
		return false
	}
	return !strings.HasPrefix(string(r), string(ReasonEvicted))
}

// want says whether an end for reason gets a line; cheap when not.
func (a *AccessLog) want(r Reason) bool {
	if a == nil || a.Logger == nil || a.Mode == AccessOff {
		return false
	}
	if errorReason(r) {
		return true
	}
	if a.Mode != AccessAll {
		return false
	}
	return a.Sample <= 1 || a.n.Add(1)%uint64(a.Sample) == 1
}

// access writes e's line, if the log wants it.
func (p *Proxy) access(e *ending, reason Reason) {
	a := p.Access
	if !a.want(reason) {
		return
	}
	ce := a.Logger.Check(zapcore.InfoLevel, accessMsg)
	if ce == nil {
		return
	}
	if c := e.pc; c != nil {
		in, out := c.n[0].Load(), c.n[1].Load()
		if c.ev != nil {
			in, out = c.ev.written()
		}
		p.table.mu.Lock() // a move sets them
		backend, moves := c.backendID, int(c.moves)
		p.table.mu.Unlock()
		ce.Write(zap.String("devid", sanitize(c.device)), zap.String("client", c.remote.addrPort().String()),
			zap.String("gateway", a.Gateway), zap.String("backend", backend),
			zap.Duration("duration", time.Since(c.since)), zap.Uint64("bytesIn", in), zap.Uint64("bytesOut", out),
			zap.String("reason", string(reason)), zap.Int("fallbacks", max(int(c.tries), 1)-1), zap.Int("moves", moves))
		return
	}
	client := ""
	if e.client != nil {
		client = e.client.String()
	}
	ce.Write(zap.String("devid", sanitize(e.device)), zap.String("client", client),
		zap.String("gateway", a.Gateway), zap.String("backend", ""),
		zap.Duration("duration", 0), zap.Uint64("bytesIn", uint64(e.n)), zap.Uint64("bytesOut", 0),
		zap.String("reason", string(reason)), zap.Int("fallbacks", 0), zap.Int("moves", 0))
}
