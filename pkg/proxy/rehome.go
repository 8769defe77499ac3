package proxy

import (
	"sync/atomic"
	"time"

	"github.com/devgate/devgate/internal/opt"
	"github.com/devgate/devgate/pkg/frame"
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
)

// MoveResults lists every MoveResult, for exporting them as 0.
var MoveResults = []MoveResult{MoveMoved, MoveNoOptIn, MoveNoOwner, MoveDialFailed, MoveTimeout,
	MoveBufferFull, MoveOldOwnerOpen, MovePartialFrame, MoveBadReply, MoveNotMovable, MoveDeviceGone}

// MoveCauses lists the causes a move is made for.
var MoveCauses = []Cause{CauseDrain, CauseRebalance, CauseBackendLost}

// MoveTally counts how the moves begun by one Relocate call (or a series of
// them, such as a paced drain) end. Safe for concurrent use.
type MoveTally struct {
	Moved   atomic.Int64 // on their new owner
	Evicted atomic.Int64 // closed: no opt-in, or a step failed
	Gone    atomic.Int64 // the device left mid-move
}

func (t *MoveTally) add(r MoveResult) {
	if t == nil {
		return
	}
	switch r {
	case MoveMoved:
		t.Moved.Add(1)
	case MoveDeviceGone:
		t.Gone.Add(1)
	default:
		t.Evicted.Add(1)
	}
}

// relocate moves or evicts cs for cause (see Relocate).
func (p *Proxy) relocate(cs []*conn, cause Cause, tally *MoveTally) int {
	n := 0
	for _, c := range cs {
		if p.startMove(c, cause, tally) {
			n++
		}
	}
	return n
}

// startMove begins moving c, or evicts it where it cannot move; false if c
// was already closing or moving.
func (p *Proxy) startMove(c *conn, cause Cause, tally *MoveTally) bool {
	// TODO(rehome): moves on the loops and the goroutine path.
	if c.close(Evicted(cause)) {
		p.moveEnded(cause, MoveNotMovable, 0, tally)
		return true
	}
	return false
}

// moveEnded counts how a move ended.
func (p *Proxy) moveEnded(cause Cause, r MoveResult, pause time.Duration, tally *MoveTally) {
	p.stats.countMove(MoveKey{cause, r})
	tally.add(r)
	if p.OnMove != nil {
		p.OnMove(cause, r, pause)
	}
}
