package proxy

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/devgate/devgate/pkg/frame"
)

// The reconnect notice: a frame written to a device just before the gateway
// evicts it (drain, rebalance, gateway drain, shutdown), so a device that
// understands it waits the seconds it says before reconnecting instead of
// joining a herd (as NATS lame-duck mode and MQTT 5 server redirect do).
//
// It is never written inside a backend to device frame: the gateway
// writes it only where it follows that direction's frames (frame.Tracker;
// a configured notice turns tracking on, as rehome does) and the device
// has been sent whole frames only, with nothing read from the backend
// still waiting for it. Otherwise (a frame under way, bytes pending, the
// backend's FIN already passed on, a move under way, framing that cannot
// be followed, or a connection copied by goroutines, whose writes to the
// device the evicting goroutine cannot order against) the device is
// evicted without a notice, counted as skipped.

// EvictNotice is the frame written before an eviction. The zero value
// (an empty Body) writes none.
type EvictNotice struct {
	Type byte   // the frame's message type
	Body string // its body; "{{.After}}" becomes the seconds to wait
	// The seconds are drawn at random (whole seconds) from AfterMin to
	// AfterMax, so the evicted devices come back spread out. If zero, 5s
	// and 30s.
	AfterMin, AfterMax time.Duration
}

// Defaults of EvictNotice.
const (
	DefaultNoticeAfterMin = 5 * time.Second
	DefaultNoticeAfterMax = 30 * time.Second
)

// NoticeAfter is the placeholder EvictNotice.Body may hold.
const NoticeAfter = "{{.After}}"

// ErrNotice is a notice that cannot be framed.
var ErrNotice = errors.New("evict notice")

func (n EvictNotice) on() bool { return n.Body != "" }

func (n EvictNotice) after() (lo, hi int64) {
	lo = int64(max(n.AfterMin, 0) / time.Second)
	if n.AfterMin == 0 {
		lo = int64(DefaultNoticeAfterMin / time.Second)
	}
	hi = int64(n.AfterMax / time.Second)
	if n.AfterMax == 0 {
		hi = int64(DefaultNoticeAfterMax / time.Second)
	}
	return lo, max(lo, hi)
}

// Build frames the notice for c with after seconds in its body.
func (n EvictNotice) Build(c frame.Config, after int64) ([]byte, error) {
	body := strings.ReplaceAll(n.Body, NoticeAfter, strconv.FormatInt(after, 10))
	if strings.Contains(body, "{{") {
		return nil, fmt.Errorf("%w: body: only %s may be substituted", ErrNotice, NoticeAfter)
	}
	f, err := c.Build(n.Type, []byte(body))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotice, err)
	}
	return f, nil
}

// Validate checks the notice frames under c with the longest wait.
func (n EvictNotice) Validate(c frame.Config) error {
	if !n.on() {
		return nil
	}
	if n.AfterMin < 0 || n.AfterMax < 0 || (n.AfterMax != 0 && n.AfterMax < n.AfterMin) {
		return fmt.Errorf("%w: want 0 <= afterMin <= afterMax", ErrNotice)
	}
	_, hi := n.after()
	_, err := n.Build(c, hi)
	return err
}

// noticeCounts counts notices written and skipped.
type noticeCounts struct {
	sent, skipped atomic.Uint64
}

// noticeFrame is the notice to write now, with a fresh random wait; nil
// when it cannot be framed (Validate says why at start).
func (p *Proxy) noticeFrame() []byte {
	lo, hi := p.EvictNotice.after()
	f, err := p.EvictNotice.Build(p.rehomeFraming[1], lo+rand.Int64N(hi-lo+1))
	if err != nil {
		return nil
	}
	return f
}

// noticeFor says whether an end for reason gets a notice: evictions,
// kicks and the cut at shutdown.
func noticeFor(reason Reason) bool {
	return reason == ReasonShutdown || reason == ReasonKicked || strings.HasPrefix(string(reason), string(ReasonEvicted))
}

// trackOn says whether routed connections follow their frames: for moves
// or for the notice.
func (p *Proxy) trackOn() bool { return p.rehomeFraming[0].LengthFieldLength != 0 }
