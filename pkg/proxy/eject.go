package proxy

import (
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/devgate/devgate/internal/opt"
	"github.com/devgate/devgate/pkg/ring"
)

// Passive ejection: consecutive failed dials to a backend (refused, timed
// out, or reset before its first byte) eject it on this replica for a
// backoff, doubling from MinBackoff to MaxBackoff. While it is ejected new
// connections skip it and dial their next owner in ring order at once, so
// a blackholed backend costs its devices no dial timeout; every replica
// uses the same order, so a device lands on the same backend whichever
// replica it reaches. When the backoff has run out one connection makes a
// trial dial (others keep skipping): it ends the ejection if it connects,
// else the backoff doubles. The last owner a connection may try is dialled
// even when ejected, so ejection alone never refuses a device.

// Eject configures passive ejection.
type Eject struct {
	// Failures is how many consecutive failed dials eject a backend. If
	// zero, 3. If negative, no backend is ever ejected.
	Failures int
	// MinBackoff is the first ejection's length (if zero, 1s); each failed
	// trial doubles it up to MaxBackoff (if zero, 30s).
	MinBackoff, MaxBackoff time.Duration
}

// Defaults of Eject.
const (
	DefaultEjectFailures   = 3
	DefaultEjectMinBackoff = time.Second
	DefaultEjectMaxBackoff = 30 * time.Second
)

// Ejection is one backend's ejection state on this replica.
type Ejection struct {
	Backend   string
	Addr      string
	Ejected   bool          // skipped by new connections now (or on trial)
	Failures  int           // consecutive failed dials
	Backoff   time.Duration // current backoff (while ejected)
	Remaining time.Duration // until the next trial dial (0: one may go now)
	Ejections uint64        // times ejected since start
}

// ejector holds the backends with failed dials; a backend whose dials
// succeed again leaves the map, so it holds at most the failing ones.
type ejector struct {
	n     atomic.Int32 // entries in m: the fast path of every success
	skips atomic.Uint64
	mu    sync.Mutex
	m     map[string]*ejectState
	total map[string]uint64 // ejections per backend id, for the metric
}

type ejectState struct {
	addr    string
	fails   int
	until   time.Time // zero: not ejected
	backoff time.Duration
	trial   time.Time // a trial dial went at; zero: none under way
}

// ejectFailures is Eject.Failures or its default; -1 when ejection is off.
func (p *Proxy) ejectFailures() int {
	if p.Eject.Failures < 0 {
		return -1
	}
	return opt.Or(p.Eject.Failures, DefaultEjectFailures)
}

// ejectSkip says whether a connection should skip b, ejected, and dial its
// next owner; last is its last owner, which is dialled anyway. When b's
// backoff ran out, the first caller makes the trial dial (false).
func (p *Proxy) ejectSkip(b ring.Backend, last bool) bool {
	e := &p.ejects
	if p.ejectFailures() < 0 || e.n.Load() == 0 {
		return false
	}
	now := time.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.m[b.ID]
	switch {
	case s == nil || s.until.IsZero() || s.addr != b.Addr:
		return false
	case last:
		return false
	case now.Before(s.until),
		!s.trial.IsZero() && now.Sub(s.trial) < p.dialTimeout()+p.firstByteWait(): // a trial is under way
		e.skips.Add(1)
		return true
	}
	s.trial = now
	return false
}

// ejectFailed counts a failed dial to b; the Failures-th in a row ejects it,
// and a failure once the backoff has run out (the trial) doubles it. A
// dial that failed for want of a local resource (file descriptors, ports,
// memory) says nothing about b.
func (p *Proxy) ejectFailed(b ring.Backend, err error) {
	limit := p.ejectFailures()
	if limit < 0 || localDialError(err) {
		return
	}
	e := &p.ejects
	now := time.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.m == nil {
		e.m, e.total = make(map[string]*ejectState), make(map[string]uint64)
	}
	s := e.m[b.ID]
	if s == nil || s.addr != b.Addr { // new, or registered again elsewhere
		s = &ejectState{addr: b.Addr}
		e.m[b.ID] = s
		e.n.Store(int32(len(e.m)))
	}
	s.fails++
	switch {
	case s.until.IsZero() && s.fails >= limit:
		s.backoff = opt.Or(p.Eject.MinBackoff, DefaultEjectMinBackoff)
		s.until, s.trial = now.Add(s.backoff), time.Time{}
		e.total[b.ID]++
		p.log.Warn("backend ejected", zap.String("backend", b.ID), zap.String("addr", b.Addr),
			zap.Int("failures", s.fails), zap.Duration("backoff", s.backoff))
	case !s.until.IsZero() && !now.Before(s.until): // the trial (or a dial after the backoff) failed
		s.backoff = min(2*s.backoff, opt.Or(p.Eject.MaxBackoff, DefaultEjectMaxBackoff))
		s.until, s.trial = now.Add(s.backoff), time.Time{}
	}
}

// ejectSucceeded records a dial to id that worked: connected (the loops,
// before any byte came back) ends an ejection; a backend that answered (or
// stayed quiet for firstByteWait on the goroutine path) also clears the
// count of failures.
func (p *Proxy) ejectSucceeded(id string, answered bool) {
	e := &p.ejects
	if e.n.Load() == 0 {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.m[id]
	if s == nil || (!answered && s.until.IsZero()) {
		return
	}
	if !s.until.IsZero() {
		p.log.Info("backend ejection ended", zap.String("backend", id), zap.String("addr", s.addr))
	}
	delete(e.m, id)
	e.n.Store(int32(len(e.m)))
}

// Ejections lists the backends with failed dials on this replica (ejected
// or counting failures), by id, and those ever ejected. Backends no longer
// in the ring (gone, drained, or at another address) are forgotten here:
// no connection dials them.
func (p *Proxy) Ejections() []Ejection {
	e := &p.ejects
	now := time.Now()
	var in map[string]string
	if p.Source != nil {
		if r := p.Source.Ring(); r != nil {
			in = make(map[string]string, r.Len())
			for _, b := range r.Backends() {
				in[b.ID] = b.Addr
			}
		}
	}
	e.mu.Lock()
	for id, s := range e.m {
		if addr, ok := in[id]; in != nil && (!ok || addr != s.addr) {
			delete(e.m, id)
		}
	}
	e.n.Store(int32(len(e.m)))
	out := make([]Ejection, 0, len(e.total)+len(e.m))
	for id, s := range e.m {
		j := Ejection{Backend: id, Addr: s.addr, Ejected: !s.until.IsZero(), Failures: s.fails,
			Ejections: e.total[id]}
		if j.Ejected {
			j.Backoff, j.Remaining = s.backoff, max(0, s.until.Sub(now))
		}
		out = append(out, j)
	}
	for id, n := range e.total {
		if e.m[id] == nil {
			out = append(out, Ejection{Backend: id, Ejections: n})
		}
	}
	e.mu.Unlock()
	slices.SortFunc(out, func(a, b Ejection) int {
		switch {
		case a.Backend < b.Backend:
			return -1
		case a.Backend > b.Backend:
			return 1
		}
		return 0
	})
	return out
}

// localDialError: the dial failed on this host, not at the backend.
func localDialError(err error) bool {
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.EADDRNOTAVAIL} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
