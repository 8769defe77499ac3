package sim

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// CheckReport is what a Checker saw. Every count is over the whole run and
// all devices. A clean run (Clean) has no disconnect and every heartbeat
// answered exactly once, in order, by the backend the device is on, which
// saw its login on that connection.
type CheckReport struct {
	Devices   int           // configured
	Connected int           // logged in at the end (at the time of Status)
	Interval  time.Duration // heartbeat period of each device
	Elapsed   time.Duration

	// PerBackend counts the connected devices by the backend answering them.
	PerBackend map[string]int

	Logins     int64 // successful logins, first ones included
	Reconnects int64 // logins after a disconnect

	// Disconnects counts logged-in connections that ended before the run
	// did (closed or reset by the gateway or the backend), by reason in
	// DisconnectReasons ("conn_closed", "conn_reset"). Errors counts
	// attempts that failed before login (reconnects), by reason.
	Disconnects       int64
	DisconnectReasons map[string]int
	Errors            map[string]int

	// Sent counts heartbeats written; Answered those answered (the first
	// answer to each). Missing counts heartbeats never answered (a later
	// one was, or the connection ended), Duplicate second answers,
	// OutOfOrder answers that came after a later heartbeat's, BadAnswers
	// heartbeat answers without a backend or a seq, or with a seq never
	// sent. InFlight counts last heartbeats (sent at the stop) still
	// unanswered Timeout later: not counted as missing.
	Sent, Answered                             int64
	Missing, Duplicate, OutOfOrder, BadAnswers int64
	InFlight                                   int64

	// DevidEmpty counts answers whose "devid" is empty: that backend saw
	// no login on the connection (a move that did not replay it);
	// DevidWrong answers naming another device.
	DevidEmpty, DevidWrong int64

	// ExtraFrames counts frames that are not heartbeat answers, such as
	// the answer to a login the gateway replayed, which it should swallow.
	ExtraFrames int64

	// Switches counts answers, on one connection, from another backend
	// than the answers before (a live move); Moves splits them by
	// "from>to". StaleAnswers counts answers from the backend a device had
	// just switched away from (must be 0: the old owner answers nothing
	// after the new one did).
	Switches     int64
	Moves        map[string]int
	StaleAnswers int64

	// PauseP50, PauseP99 and PauseMax are over the switches: the gap
	// between the last answer from the old backend and the first from the
	// new one. A gap without a move is about one Interval.
	PauseP50, PauseP99, PauseMax time.Duration

	// Clean is true when Problems is empty.
	Clean bool
}

// Problems names each failed check with its count, e.g. "disconnects 3";
// empty for a clean run.
func (r CheckReport) Problems() []string {
	var out []string
	for _, p := range []struct {
		name string
		n    int64
	}{
		{"disconnects", r.Disconnects}, {"missing", r.Missing}, {"duplicate", r.Duplicate},
		{"out-of-order", r.OutOfOrder}, {"bad-answers", r.BadAnswers}, {"devid-empty", r.DevidEmpty},
		{"devid-wrong", r.DevidWrong}, {"extra-frames", r.ExtraFrames}, {"stale-answers", r.StaleAnswers},
	} {
		if p.n != 0 {
			out = append(out, fmt.Sprintf("%s %d", p.name, p.n))
		}
	}
	if r.Answered == 0 {
		out = append(out, "no heartbeat answered")
	}
	return out
}

// Status returns the report so far: Missing counts only the gaps seen yet.
func (c *Checker) Status() CheckReport { return c.report() }

func (c *Checker) report() CheckReport {
	n := &c.n
	r := CheckReport{
		Devices:      len(c.devs),
		Connected:    int(n.connected.Load()),
		Interval:     c.cfg.Interval,
		Logins:       n.logins.Load(),
		Reconnects:   n.reconnects.Load(),
		Disconnects:  n.disconnects.Load(),
		Sent:         n.sent.Load(),
		Answered:     n.answered.Load(),
		Missing:      n.missing.Load(),
		Duplicate:    n.duplicate.Load(),
		OutOfOrder:   n.outOfOrder.Load(),
		BadAnswers:   n.badAnswers.Load(),
		InFlight:     n.inFlight.Load(),
		DevidEmpty:   n.devidEmpty.Load(),
		DevidWrong:   n.devidWrong.Load(),
		ExtraFrames:  n.extra.Load(),
		Switches:     n.switches.Load(),
		StaleAnswers: n.stale.Load(),
	}
	c.mu.Lock()
	r.Elapsed = time.Since(c.start)
	r.PerBackend = cloneMap(c.perBackend)
	r.Moves = cloneMap(c.moves)
	r.DisconnectReasons = cloneMap(c.drops)
	r.Errors = cloneMap(c.errs)
	r.PauseP50, r.PauseP99, r.PauseMax = c.pauses.quantile(0.50), c.pauses.quantile(0.99), c.pauses.max
	c.mu.Unlock()
	r.Clean = len(r.Problems()) == 0
	return r
}

// pauseSample keeps the pauses for percentiles: all of them up to
// maxPauseSamples, then a uniform sample of that size (reservoir sampling),
// so memory stays bounded however many devices move.
type pauseSample struct {
	d   []time.Duration
	n   int
	max time.Duration
}

func (p *pauseSample) add(d time.Duration) {
	p.n++
	p.max = max(p.max, d)
	if len(p.d) < maxPauseSamples {
		p.d = append(p.d, d)
		return
	}
	if i := rand.N(p.n); i < maxPauseSamples {
		p.d[i] = d
	}
}

// quantile is the nearest-rank q-quantile; 0 without samples.
func (p *pauseSample) quantile(q float64) time.Duration {
	if len(p.d) == 0 {
		return 0
	}
	s := slices.Clone(p.d)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.999999) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// Line is the status on one line, for a live view:
//
//	12s connected 1000/1000 | demo-1 334  demo-2 0  demo-3 666 | answered 120000 missing 0 switches 333 disconnects 0
func (r CheckReport) Line() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%4s connected %d/%d |", r.Elapsed.Round(time.Second), r.Connected, r.Devices)
	for _, id := range slices.Sorted(maps.Keys(r.PerBackend)) {
		fmt.Fprintf(&b, " %s %d ", printable(id), r.PerBackend[id])
	}
	fmt.Fprintf(&b, "| answered %d missing %d switches %d disconnects %d", r.Answered, r.Missing, r.Switches, r.Disconnects)
	if p := r.Problems(); len(p) > 0 && r.Answered > 0 {
		fmt.Fprintf(&b, " | %s", strings.Join(p, ", "))
	}
	return b.String()
}

// String is the summary: where the devices are, what was sent and
// answered, the switches with their pauses, and the verdict.
func (r CheckReport) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "checked %d devices for %s, a numbered heartbeat every %s: connected %d at the end\n",
		r.Devices, r.Elapsed.Round(time.Millisecond), r.Interval, r.Connected)
	width := len("backend")
	for id := range r.PerBackend {
		width = max(width, len(id))
	}
	if len(r.PerBackend) > 0 {
		fmt.Fprintf(&b, "  %-*s %9s %7s\n", width, "backend", "connected", "share")
		for _, id := range slices.Sorted(maps.Keys(r.PerBackend)) {
			n := r.PerBackend[id]
			fmt.Fprintf(&b, "  %-*s %9d %6.1f%%\n", width, printable(id), n, pct(n, r.Connected))
		}
	}
	fmt.Fprintf(&b, "logins %d, reconnects %d, disconnects %d\n", r.Logins, r.Reconnects, r.Disconnects)
	fmt.Fprintf(&b, "heartbeats sent %d, answered %d; missing %d, duplicate %d, out of order %d, bad %d; in flight at the end %d\n",
		r.Sent, r.Answered, r.Missing, r.Duplicate, r.OutOfOrder, r.BadAnswers, r.InFlight)
	fmt.Fprintf(&b, "answers with an empty devid %d, a wrong devid %d; other frames %d\n",
		r.DevidEmpty, r.DevidWrong, r.ExtraFrames)
	fmt.Fprintf(&b, "backend switches %d, pause p50 %s p99 %s max %s (gap between answers, one interval when nothing moves); answers from the old backend after a switch %d\n",
		r.Switches, ms(r.PauseP50), ms(r.PauseP99), ms(r.PauseMax), r.StaleAnswers)
	writeCounts(&b, "switches (from > to):", r.Moves, func(k string) string { return strings.Replace(k, ">", " > ", 1) })
	writeCounts(&b, "disconnects:", r.DisconnectReasons, nil)
	writeCounts(&b, "failed attempts:", r.Errors, nil)
	if p := r.Problems(); len(p) > 0 {
		fmt.Fprintf(&b, "FAILED: %s\n", strings.Join(p, ", "))
	} else {
		b.WriteString("OK: no disconnect, every heartbeat answered once and in order, every answer from a backend that saw the login\n")
	}
	return b.String()
}

func ms(d time.Duration) string { return d.Round(100 * time.Microsecond).String() }
