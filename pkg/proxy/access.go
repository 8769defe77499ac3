package proxy

import (
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
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
	// ErrorsPerSecond caps the error lines of one reason within a second,
	// so that a flood of refusals does not become a flood of lines; the
	// lines over it are counted (Suppressed) and summed up in one line
	// with the next error line after that second. If zero, 100; if
	// negative, no cap.
	ErrorsPerSecond int

	n   atomic.Uint64 // normal closes seen, for the sample
	lim accessLimit
}

// DefaultAccessErrorsPerSecond is AccessLog.ErrorsPerSecond's default.
const DefaultAccessErrorsPerSecond = 100

// accessLimit counts the error lines of the current second by reason.
type accessLimit struct {
	mu         sync.Mutex
	sec        int64             // unix second counted
	lines      map[Reason]int    // lines written in it
	dropped    map[Reason]uint64 // lines dropped in it, not yet summed up
	suppressed map[Reason]uint64 // lines dropped so far
}

// suppressedLine is the message of the line that sums up dropped lines.
const suppressedLine = "access lines suppressed"

// allowError says whether an error line for r fits this second's cap.
func (a *AccessLog) allowError(r Reason, now time.Time) bool {
	limit := a.ErrorsPerSecond
	if limit < 0 {
		return true
	}
	if limit == 0 {
		limit = DefaultAccessErrorsPerSecond
	}
	l := &a.lim
	var summary map[Reason]uint64
	l.mu.Lock()
	if l.lines == nil {
		l.lines, l.suppressed = make(map[Reason]int), make(map[Reason]uint64)
	}
	if sec := now.Unix(); sec != l.sec {
		l.sec, summary, l.dropped = sec, l.dropped, nil // the summary is written below, unlocked
		clear(l.lines)
	}
	ok := l.lines[r] < limit
	if ok {
		l.lines[r]++
	} else {
		if l.dropped == nil {
			l.dropped = make(map[Reason]uint64)
		}
		l.dropped[r]++
		l.suppressed[r]++
	}
	l.mu.Unlock()
	for reason, n := range summary {
		a.Logger.Info(suppressedLine, zap.String("reason", string(reason)), zap.Uint64("lines", n),
			zap.Int("perSecond", limit), zap.String("gateway", a.Gateway))
	}
	return ok
}

// Suppressed returns the error lines dropped so far by the cap, by reason.
func (a *AccessLog) Suppressed() map[Reason]uint64 {
	if a == nil {
		return nil
	}
	a.lim.mu.Lock()
	defer a.lim.mu.Unlock()
	return maps.Clone(a.lim.suppressed)
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
		return a.allowError(r, time.Now())
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

// AccessSuppressed returns the access log's error lines dropped so far by
// its cap, by reason (nil without an access log).
func (p *Proxy) AccessSuppressed() map[Reason]uint64 { return p.Access.Suppressed() }
