package proxy

import (
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/devgate/devgate/internal/opt"
	"github.com/devgate/devgate/pkg/ring"
)

// Login pacing per backend (Proxy.Admission). A backend's pace is new
// connections per second across the fleet: its registration meta
// "loginsPerSecond", else Admission.LoginsPerSecond; this replica takes
// its share (the pace over the live replicas, SetAdmissionFleet). Before
// each dial, a connection takes a token of the backend it is about to
// dial; over the pace it waits in the gateway, its key frame read and
// nothing dialled, first in first out per backend, at most MaxWait from
// its first wait, then is refused as admission_timeout. A dial that fails
// gives its token back (the backend took no login), so a dead owner does
// not hold its devices back; the next owner's pace applies to them, as it
// is the backend that takes their logins.
//
// A backend that joins the ring (new, or back after being absent or
// drained; SetAdmissionFleet says which) ramps from 10% of its pace to
// 100% over SlowStart (meta "slowStart", a Go duration, else
// Admission.SlowStart). The ring is not changed: nobody is placed
// differently, devices only wait longer for their turn.
//
// Moves of live devices (rehome) are not paced: they are not new logins
// the device makes, and a move that waited would hold the device paused.

// Admission configures login pacing. The zero value paces nothing.
type Admission struct {
	// LoginsPerSecond is a backend's pace, new connections per second
	// across the fleet, when its meta "loginsPerSecond" gives none. If
	// zero, none: unpaced.
	LoginsPerSecond float64

	// MaxWait bounds how long a connection waits for its turn. If zero,
	// DefaultMaxWait.
	MaxWait time.Duration

	// SlowStart is how long a backend that joined ramps from 10% to 100%
	// of its pace, when its meta "slowStart" gives none. If zero,
	// DefaultSlowStart. If negative, none.
	SlowStart time.Duration
}

// Defaults of Admission and the meta keys a backend registers its own
// with.
const (
	DefaultMaxWait   = 30 * time.Second
	DefaultSlowStart = 60 * time.Second

	MetaLoginsPerSecond = "loginsPerSecond"
	MetaSlowStart       = "slowStart"

	// slowStartFloor is the share of its pace a backend gets as it joins.
	slowStartFloor = 0.1
	// paceBurst is the most tokens a backend saves up, in seconds of its
	// pace (at least one): small, so a quiet backend does not take a
	// burst over its pace when the herd comes.
	paceBurst = 0.02
	// paceTick is the shortest wait between two hand-outs, so high paces
	// hand out in small batches rather than a timer per token.
	paceTick = 5 * time.Millisecond
)

func (a Admission) maxWait() time.Duration { return opt.Or(a.MaxWait, DefaultMaxWait) }

// waiter is a connection waiting for its turn at one backend.
type waiter struct {
	state atomic.Int32 // waitWaiting, then waitGranted or waitCancelled
	since time.Time
	grant func() // called once, outside locks, when its turn comes
}

const (
	waitWaiting = iota
	waitGranted
	waitCancelled
)

// cancel withdraws w; false if its turn came first (grant runs or ran).
func (w *waiter) cancel() bool { return w.state.CompareAndSwap(waitWaiting, waitCancelled) }

// pacers are the proxy's paces by backend id.
type pacers struct {
	mu       sync.Mutex
	byID     map[string]*pacer
	replicas int                  // live replicas sharing each pace; 0: 1
	joined   map[string]time.Time // backend id -> when it joined (slow start)
}

// pacer is one backend's token bucket and queue.
type pacer struct {
	id       string
	admitted atomic.Uint64 // tokens handed out
	waiting  atomic.Int64  // connections in q not cancelled

	mu      sync.Mutex
	meta    [2]string // the meta the pace was read from
	read    bool      // meta read once
	rate    float64   // fleet-wide pace (0: none)
	slow    time.Duration
	share   float64 // this replica's part now, ramp included (refresh)
	tokens  float64
	last    time.Time
	q       []*waiter
	head    int
	timer   *time.Timer
	armed   bool
	parent  *pacers
	dropped bool // out of the map: a pacer made later takes over
}

// AdmissionStats is one backend's pacing on this replica.
type AdmissionStats struct {
	Admitted uint64  // connections let through to dial it
	Waiting  int64   // connections waiting for its turn now
	Rate     float64 // this replica's pace now (slow start included)
}

// SetAdmissionFleet tells the pacing how many live gateway replicas share
// each backend's pace (the fleet's gateways/) and which backends joined the
// ring now (they ramp up over their slow start). pkg/admin calls it on each
// snapshot (FollowAdmission).
func (p *Proxy) SetAdmissionFleet(replicas int, joined []string) {
	p.init()
	ps := &p.pace
	now := time.Now()
	ps.mu.Lock()
	ps.replicas = replicas
	for _, id := range joined {
		if ps.joined == nil {
			ps.joined = make(map[string]time.Time)
		}
		ps.joined[id] = now
	}
	for id, at := range ps.joined { // ramps over: forget them
		if now.Sub(at) > p.slowStartMax() {
			delete(ps.joined, id)
		}
	}
	r := p.Source.Ring()
	var drop []*pacer
	for id, pc := range ps.byID { // backends gone, nobody waiting: forget
		if !inRing(r, id) && pc.waiting.Load() == 0 {
			drop = append(drop, pc)
			delete(ps.byID, id)
		}
	}
	ps.mu.Unlock()
	for _, pc := range drop { // pc.mu before ps.mu, never the other way
		pc.mu.Lock()
		pc.dropped = true
		pc.mu.Unlock()
		pc.timer.Stop()
	}
}

// slowStartMax bounds how long a join is remembered: the longest ramp a
// meta may ask for, or the default.
func (p *Proxy) slowStartMax() time.Duration { return max(maxMetaSlowStart, p.Admission.SlowStart) }

// maxMetaSlowStart bounds a backend's own slow start (meta slowStart).
const maxMetaSlowStart = time.Hour

func inRing(r ring.Ring, id string) bool {
	if r == nil {
		return false
	}
	for _, b := range r.Backends() {
		if b.ID == id {
			return true
		}
	}
	return false
}

// AdmissionStats returns, for each backend paced here, its pacing now:
// every paced backend in the ring, also one no login has reached yet (a
// backend that joined or came back from a drain), and those still
// holding waiting connections.
func (p *Proxy) AdmissionStats() map[string]AdmissionStats {
	p.init()
	if r := p.Source.Ring(); r != nil {
		for _, b := range r.Backends() {
			p.pacerFor(b) // made as the first login would make it
		}
	}
	ps := &p.pace
	ps.mu.Lock()
	pcs := make([]*pacer, 0, len(ps.byID))
	for _, pc := range ps.byID {
		pcs = append(pcs, pc)
	}
	ps.mu.Unlock()
	out := make(map[string]AdmissionStats, len(pcs))
	for _, pc := range pcs {
		pc.mu.Lock()
		pc.refresh(time.Now())
		rate := pc.share
		pc.mu.Unlock()
		out[pc.id] = AdmissionStats{Admitted: pc.admitted.Load(), Waiting: pc.waiting.Load(), Rate: rate}
	}
	return out
}

// paceOf reads b's fleet-wide pace and slow start: its meta, else the
// proxy's defaults. A meta that does not parse falls back to the default.
func (p *Proxy) paceOf(b ring.Backend) (rate float64, slow time.Duration) {
	rate = p.Admission.LoginsPerSecond
	if s, ok := b.Meta[MetaLoginsPerSecond]; ok {
		if v, err := strconv.ParseFloat(s, 64); err == nil && v >= 0 && v <= 1e9 {
			rate = v
		}
	}
	slow = opt.OrNone(p.Admission.SlowStart, DefaultSlowStart)
	if s, ok := b.Meta[MetaSlowStart]; ok {
		if v, err := time.ParseDuration(s); err == nil && v <= maxMetaSlowStart {
			slow = max(v, 0)
		}
	}
	return rate, slow
}

// pacerFor returns b's pacer, nil when b is not paced.
func (p *Proxy) pacerFor(b ring.Backend) *pacer {
	ps := &p.pace
	if p.Admission.LoginsPerSecond <= 0 && b.Meta[MetaLoginsPerSecond] == "" {
		return nil // the common case: nothing paced, no lock
	}
	ps.mu.Lock()
	pc := ps.byID[b.ID]
	if pc == nil {
		if ps.byID == nil {
			ps.byID = make(map[string]*pacer)
		}
		pc = &pacer{id: b.ID, parent: ps, last: time.Now(), tokens: 1} // the first goes at once
		pc.timer = time.AfterFunc(time.Hour, pc.tick)
		pc.timer.Stop()
		ps.byID[b.ID] = pc
	}
	ps.mu.Unlock()
	pc.mu.Lock()
	if m := [2]string{b.Meta[MetaLoginsPerSecond], b.Meta[MetaSlowStart]}; m != pc.meta || !pc.read {
		pc.meta, pc.read = m, true
		pc.rate, pc.slow = p.paceOf(b)
	}
	rate := pc.rate
	pc.mu.Unlock()
	if rate <= 0 {
		return nil
	}
	return pc
}

// take asks for a token for w: true if w may dial at once; else w waits
// at the back of the queue and its grant runs when its turn comes.
func (pc *pacer) take(w *waiter) bool {
	pc.mu.Lock()
	now := time.Now()
	pc.refill(now)
	if (pc.head == len(pc.q) && pc.tokens >= 1) || pc.dropped {
		pc.tokens--
		pc.mu.Unlock()
		pc.admitted.Add(1)
		return true
	}
	pc.q = append(pc.q, w)
	pc.waiting.Add(1)
	pc.armLocked(now)
	pc.mu.Unlock()
	return false
}

// giveBack returns a token its connection did not use (the dial failed):
// the backend took no login, so the next in line may go.
func (pc *pacer) giveBack() {
	if pc == nil {
		return
	}
	pc.mu.Lock()
	pc.refill(time.Now())
	pc.tokens = min(pc.tokens+1, pc.burst())
	pc.mu.Unlock()
	pc.tick()
}

// refresh sets share: the replica's part of the pace, ramped if the
// backend joined within its slow start. Called with pc.mu held.
func (pc *pacer) refresh(now time.Time) {
	ps := pc.parent
	ps.mu.Lock()
	replicas := max(ps.replicas, 1)
	at, joined := ps.joined[pc.id]
	ps.mu.Unlock()
	share := pc.rate / float64(replicas)
	if joined && pc.slow > 0 {
		if since := now.Sub(at); since < pc.slow {
			share *= slowStartFloor + (1-slowStartFloor)*since.Seconds()/pc.slow.Seconds()
		}
	}
	pc.share = share
}

func (pc *pacer) burst() float64 { return max(1, pc.share*paceBurst) }

// refill adds the tokens earned since last. Called with pc.mu held.
func (pc *pacer) refill(now time.Time) {
	pc.refresh(now)
	if d := now.Sub(pc.last); d > 0 {
		pc.tokens = min(pc.burst(), pc.tokens+pc.share*d.Seconds())
	}
	pc.last = now
}

// armLocked sets the timer for when the next token is due.
func (pc *pacer) armLocked(now time.Time) {
	if pc.armed || pc.head == len(pc.q) {
		return
	}
	wait := paceTick
	if pc.share > 0 {
		wait = max(wait, time.Duration((1-pc.tokens)/pc.share*float64(time.Second)))
	}
	pc.armed = true
	pc.timer.Reset(wait)
}

// tick hands out the tokens earned to the waiters in order, skipping the
// ones that left, and sets the timer again while any wait.
func (pc *pacer) tick() {
	var grants []*waiter
	pc.mu.Lock()
	pc.armed = false
	now := time.Now()
	pc.refill(now)
	for pc.head < len(pc.q) {
		w := pc.q[pc.head]
		if w.state.Load() == waitCancelled {
			pc.popLocked()
			continue
		}
		if pc.tokens < 1 && pc.rate > 0 && !pc.dropped {
			break
		}
		pc.popLocked()
		if w.state.CompareAndSwap(waitWaiting, waitGranted) {
			pc.tokens--
			grants = append(grants, w)
		}
	}
	pc.armLocked(now)
	pc.mu.Unlock()
	for _, w := range grants {
		pc.waiting.Add(-1)
		pc.admitted.Add(1)
		w.grant()
	}
}

func (pc *pacer) popLocked() {
	pc.q[pc.head] = nil
	pc.head++
	if pc.head == len(pc.q) {
		pc.q, pc.head = pc.q[:0], 0
	} else if pc.head > 64 && pc.head > len(pc.q)/2 {
		n := copy(pc.q, pc.q[pc.head:])
		clear(pc.q[n:])
		pc.q, pc.head = pc.q[:n], 0
	}
}

// left says a waiter that cancelled itself is no longer waiting (the
// queue drops it when it reaches it).
func (pc *pacer) left() { pc.waiting.Add(-1) }
