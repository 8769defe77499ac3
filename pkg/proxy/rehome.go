package proxy

import (
	"bytes"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/devgate/devgate/internal/opt"
	"github.com/devgate/devgate/pkg/frame"
	"github.com/devgate/devgate/pkg/ring"
)

// Moving live devices (rehoming): instead of closing a device's connection
// when its backend is drained, rebalanced away or lost, the gateway cuts
// both directions at a frame boundary, dials the new owner, replays the
// device's saved login frame there, swallows the answer to it and goes on
// copying. The device sees a pause, not a disconnect. See docs/DESIGN.md
// "Moving a live device" for the state machine.

// Rehome configures moves. The zero value is off.
type Rehome struct {
	// Enabled moves devices where the new owner opts in (registration meta
	// MetaRehome: RehomeLogin); others are evicted as without it.
	Enabled bool

	// Timeout bounds the pause of one move, from the request to the first
	// byte copied to the new owner; past it the device is evicted. If zero, 5s.
	Timeout time.Duration

	// MaxBuffered bounds the device bytes held during a move. If zero, 64 KiB.
	MaxBuffered int

	// KeepReply forwards the new owner's answer to the replayed login to
	// the device. By default it is swallowed: the device logged in once.
	KeepReply bool

	// DrainGrace is how long the old owner may go on answering after it
	// was half-closed; an old owner still open then ends the move in an
	// eviction. If zero, 1s.
	DrainGrace time.Duration

	// ReplyFrame is the framing of the backend to device direction. If
	// zero, the Matcher's.
	ReplyFrame frame.Config
}

// Defaults of Rehome's fields.
const (
	DefaultRehomeTimeout     = 5 * time.Second
	DefaultRehomeMaxBuffered = 64 << 10
	DefaultRehomeDrainGrace  = time.Second
)

func (r *Rehome) timeout() time.Duration    { return opt.Or(r.Timeout, DefaultRehomeTimeout) }
func (r *Rehome) maxBuffered() int          { return opt.Or(r.MaxBuffered, DefaultRehomeMaxBuffered) }
func (r *Rehome) drainGrace() time.Duration { return opt.Or(r.DrainGrace, DefaultRehomeDrainGrace) }

// MetaRehome is the registration meta key by which a backend opts in to
// receiving moved devices; RehomeLogin is its value: the backend takes a
// login replayed on a fresh connection as the device resuming its session.
const (
	MetaRehome  = "rehome"
	RehomeLogin = "login"
)

// CauseBackendLost: the backend went away (left the ring, or refuses or
// times out dials) under the device.
const CauseBackendLost Cause = "backend_lost"

// MoveResult is how a move ended: MoveMoved, or the reason it fell back to
// an eviction (the device connection closed as without rehome).
type MoveResult string

// How moves end, as counted in devgate_rehome_total{result}.
const (
	MoveMoved        MoveResult = "moved"
	MoveNoOptIn      MoveResult = "evicted_no_optin"       // the new owner does not take moved devices
	MoveNoOwner      MoveResult = "evicted_no_owner"       // the ring gives no other owner
	MoveDialFailed   MoveResult = "evicted_dial_failed"    // the new owner refused, timed out or reset
	MoveTimeout      MoveResult = "evicted_timeout"        // Rehome.Timeout passed
	MoveBufferFull   MoveResult = "evicted_buffer_full"    // the device sent more than MaxBuffered mid-move
	MoveOldOwnerOpen MoveResult = "evicted_old_owner_open" // the old owner did not close within DrainGrace
	MovePartialFrame MoveResult = "evicted_partial_frame"  // a partial frame had reached the device
	MoveBadReply     MoveResult = "evicted_bad_reply"      // the new owner's answer to the login was not a frame
	MoveNotMovable   MoveResult = "evicted_not_movable"    // no saved login or framing for this connection
	MoveDeviceGone   MoveResult = "device_gone"            // the device closed during the move
	MoveClosed       MoveResult = "closed"                 // closed mid-move for another reason (shutdown, replaced, kick)
)

// MoveResults lists every MoveResult, for exporting them as 0.
var MoveResults = []MoveResult{MoveMoved, MoveNoOptIn, MoveNoOwner, MoveDialFailed, MoveTimeout,
	MoveBufferFull, MoveOldOwnerOpen, MovePartialFrame, MoveBadReply, MoveNotMovable, MoveDeviceGone, MoveClosed}

// MoveCauses lists the causes a move is made for.
var MoveCauses = []Cause{CauseDrain, CauseRebalance, CauseBackendLost}

// MoveTally counts how the moves begun by one Relocate call (or a series of
// them, such as a paced drain) end. Safe for concurrent use.
type MoveTally struct {
	Moved   atomic.Int64 // on their new owner
	Evicted atomic.Int64 // closed: no opt-in, or a step failed
	Gone    atomic.Int64 // the device left, or the connection was closed otherwise, mid-move
}

func (t *MoveTally) add(r MoveResult) {
	if t == nil {
		return
	}
	switch r {
	case MoveMoved:
		t.Moved.Add(1)
	case MoveDeviceGone, MoveClosed:
		t.Gone.Add(1)
	default:
		t.Evicted.Add(1)
	}
}

// relocate moves or evicts cs for cause (see Relocate).
func (p *Proxy) relocate(cs []*conn, cause Cause, tally *MoveTally) int {
	n := 0
	begun := make(chan struct{}, len(cs))
	posted := 0
	for _, c := range cs {
		ok, onLoop := p.startMove(c, cause, tally, begun)
		if ok {
			n++
		}
		if onLoop {
			posted++
		}
	}
	// A loop begins a move when it reads its message: wait for that (it is
	// prompt), so that device bytes sent after Relocate returns are cut as
	// the move's, on either data path. Bounded: a stopping loop drops it.
	timeout := time.NewTimer(time.Second)
	defer timeout.Stop()
	for ; posted > 0; posted-- {
		select {
		case <-begun:
		case <-timeout.C:
			return n
		}
	}
	return n
}

// startMove begins moving c to the owner the ring gives its device now, or
// evicts it where it cannot move; false if c was already closing or moving.
// The move itself runs where c's sockets are: on its loop, or in its
// copying goroutines.
//
// A move posted to a loop sends to begun once the loop has begun it.
func (p *Proxy) startMove(c *conn, cause Cause, tally *MoveTally, begun chan<- struct{}) (ok, onLoop bool) {
	if c.closing.Load() || c.moving.Load() || (c.ev != nil && !c.ev.onLoop()) {
		return false, false // (not yet on its loop: the goroutine handing it over still owns it)
	}
	if !p.Rehome.Enabled {
		if !c.close(Evicted(cause)) {
			return false, false
		}
		tally.add(MoveNotMovable) // an eviction; not a move, so not counted as one
		return true, false
	}
	from := p.table.backendOf(c)
	to, res := p.moveTarget(c.device, from, false)
	if res == "" && !c.movable() {
		res = MoveNotMovable
	}
	if res != "" {
		if !c.close(Evicted(cause)) {
			return false, false
		}
		p.moveEnded(cause, res, 0, tally)
		return true, false
	}
	if !c.moving.CompareAndSwap(false, true) {
		return false, false
	}
	p.stats.moving.Add(1)
	mv := &move{cause: cause, tally: tally, c: c, to: to, start: time.Now(), begun: begun}
	if c.ev != nil {
		c.ev.postMove(mv)
		return true, true
	}
	p.startMoveGo(c, mv)
	return true, false
}

// move is one move of a live device.
type move struct {
	cause Cause
	c     *conn
	begun chan<- struct{} // told when a loop begins the move (relocate waits)
	tally *MoveTally
	to    ring.Backend // the new owner
	src   netip.Addr   // the source address the new owner's dial bound
	start time.Time
	lost  error // backend_lost: the old owner's error (nil: its FIN)
	moveState
}

// moveTarget is the owner a device on backend from moves to: the ring's
// owner now, or with lost (from is gone) the first owner in fallback order
// other than from. A result says why there is none.
func (p *Proxy) moveTarget(device, from string, lost bool) (ring.Backend, MoveResult) {
	r := p.Source.Ring()
	if r == nil || r.Len() == 0 {
		return ring.Backend{}, MoveNoOwner
	}
	var stack [8]int
	bs := r.Backends()
	for _, i := range r.Owners([]byte(device), p.maxTries(), stack[:0]) {
		b := bs[i]
		if b.ID == from {
			if lost {
				continue
			}
			return ring.Backend{}, MoveNoOwner // it still owns the device
		}
		if b.Meta[MetaRehome] != RehomeLogin {
			return ring.Backend{}, MoveNoOptIn
		}
		return b, ""
	}
	return ring.Backend{}, MoveNoOwner
}

// moveState is where a move is: its phase and the bytes it holds.
type moveState struct {
	phase   uint8
	id      uint32 // on a loop: tells this move's deadlines from a later one's
	cutAt   bool   // the device's bytes to the old owner end at a frame boundary
	partOut bool   // the device holds the start of a frame from the old owner not yet ended
	held    []byte // device bytes for the new owner
	back    []byte // the old owner's partial frame, not forwarded
}

// Phases of a move.
const (
	mvCut     = iota // device bytes go to the old owner until a frame ends
	mvDrain          // the old owner was half-closed: its last answers go to the device
	mvCheck          // backend_lost: is the old owner really gone? (one check per backend)
	mvDial           // connecting to the new owner
	mvSwallow        // the login was replayed: dropping the answer to it
)

// movable says whether c kept what a move needs.
func (c *conn) movable() bool { return c.lg != nil }

// rehomeOn says whether routed connections keep what a move needs.
func (p *Proxy) rehomeOn() bool { return p.Rehome.Enabled && p.rehomeFraming[0].LengthFieldLength != 0 }

// initRehome checks that both directions' framing can be tracked. A
// framing that cannot leaves moves off (every move is an eviction).
func (p *Proxy) initRehome() {
	if !p.Rehome.Enabled && !p.EvictNotice.on() { // the notice needs tracking too (notice.go)
		return
	}
	f := [2]frame.Config{p.Matcher.Frame, p.Rehome.ReplyFrame}
	for d := range f {
		if f[d] == (frame.Config{}) {
			f[d] = p.Matcher.Frame
		}
		if f[d] == (frame.Config{}) {
			f[d] = frame.DefaultConfig()
		}
		if err := frame.Trackable(f[d]); err != nil {
			p.log.Error("rehome: framing cannot be tracked; devices will be evicted instead of moved", zap.Error(err))
			return
		}
	}
	p.rehomeFraming = f
}

// session is what a routed connection keeps to be moved: its login frame(s)
// to replay and where each direction's frames end.
type session struct {
	frames []byte
	remote netip.AddrPort // the device's address, for a PROXY header to the new owner
	track  [2]frame.Tracker
	broken bool // a direction's framing could not be followed: not movable
	// skip drops device bytes up to the next frame boundary: the rest of a
	// frame a lost owner had begun. It outlives the move, as the device may
	// send that rest after it.
	skip bool
}

// newLogin keeps the login from the preread bytes buf (every byte sent to
// the backend so far) and first (the backend's first bytes already sent
// to the device); nil when rehome is off or buf cannot be followed.
func (p *Proxy) newLogin(buf, first []byte, remote netip.AddrPort) *session {
	if !p.trackOn() {
		return nil
	}
	_, end, err := p.Matcher.FindEnd(buf)
	if err != nil {
		return nil
	}
	lg := &session{frames: bytes.Clone(buf[:end]), remote: remote}
	if _, _, err := lg.track[0].Feed(&p.rehomeFraming[0], buf); err != nil {
		return nil
	}
	if _, _, err := lg.track[1].Feed(&p.rehomeFraming[1], first); err != nil {
		return nil
	}
	return lg
}

// feed follows direction d's frames through b.
func (lg *session) feed(p *Proxy, d int, b []byte) (first, last int) {
	if lg.broken {
		return -1, -1
	}
	first, last, err := lg.track[d].Feed(&p.rehomeFraming[d], b)
	if err != nil {
		lg.broken = true
		return -1, -1
	}
	return first, last
}

// moveEnded counts how a move ended.
func (p *Proxy) moveEnded(cause Cause, r MoveResult, pause time.Duration, tally *MoveTally) {
	p.stats.countMove(MoveKey{cause, r})
	tally.add(r)
	if p.OnMove != nil {
		p.OnMove(cause, r, pause)
	}
}

// finishMove counts a move that had begun (startMove or a lost backend)
// and lets its connection be moved again.
func (p *Proxy) finishMove(c *conn, mv *move, r MoveResult) {
	p.stats.moving.Add(-1)
	c.moving.Store(false)
	p.moveEnded(mv.cause, r, time.Since(mv.start), mv.tally)
}

// rehomed records that c now copies to backend id (dialled from src).
func (p *Proxy) rehomed(c *conn, id string, src netip.Addr) {
	p.table.rekey(c, id, p.srcIndex(src))
	p.devices.rehomed(c, id)
}

// addrPort is a's address and port (zero if a is not TCP).
func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort()
	}
	return netip.AddrPort{}
}
