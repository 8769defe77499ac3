//go:build linux

package proxy

import (
	"errors"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/devgate/devgate/pkg/proxy/internal/netpoll"
)

// The event-driven path (the default; off with Proxy.Goroutines). Each loop is a goroutine with
// its own epoll instance (GOMAXPROCS of them). The loops accept from a
// *net.TCPListener themselves (loop_accept_linux.go; from other listeners
// Serve accepts) and share the clients out round-robin; a loop reads the
// key frame, dials the owner (loop_preread_linux.go) and copies
// (loop_copy_linux.go). Where it cannot do the steps before routing (PROXY
// header, TLS, a custom Dial),
// Serve accepts, serveConn does them in a goroutine and hands the routed
// pair over (handOff). Either way an idle device costs no goroutine, no
// stack and no splice pipe: only its two sockets and an evPair (under
// 1 KB in all). A loop never blocks in epoll_wait: it polls with a
// zero timeout and, when nothing is ready, parks in Go's netpoller on the
// epoll fd itself, so waking it costs a goroutine switch rather than a
// thread wakeup and a P handoff.
//
// Readiness is level-triggered. Each readable event reads once (at most
// evBufSize) into the loop's shared buffer and writes it to the peer, so a
// busy connection cannot starve the others on its loop, and nothing has to
// be drained to EAGAIN. Whatever the peer does not take stays in a pooled
// pending buffer; the source is then no longer watched for reading and the
// peer is watched for writing until the rest is written (backpressure). An
// fd with nothing to watch is taken out of the epoll set: level-triggered
// EPOLLHUP cannot be masked, and a paused source that hangs up would
// otherwise wake the loop without end.
//
// Go's netpoller keeps accepted sockets registered too; it is harmless as
// no goroutine reads or writes them. Only the loop closes them (through
// the *net.TCPConn, after EPOLL_CTL_DEL; sockets it dialled itself are raw
// fds). conn.close posts a kill to the loop and wakes it through a pipe:
// an fd number the loop closed may already name another socket.

// evBufSize is the read buffer each loop shares and the size of a pending
// buffer.
const evBufSize = 64 << 10

var evPendingPool = sync.Pool{New: func() any { b := make([]byte, evBufSize); return &b }}

// evLoops is the proxy's set of loops: started on first use, stopped by
// Shutdown once no connection is left.
type evLoops struct {
	mu      sync.Mutex
	loops   []*evLoop
	stopped bool
	rr      atomic.Uint32 // round-robin: the loop for the next connection
	wg      sync.WaitGroup
	paused  atomic.Uint64 // times a direction stopped reading for a full peer
	counts  []*evBytes    // one per loop, kept after stop
}

// evBytes counts the bytes one loop wrote, per direction. Only its loop
// adds, and the padding keeps the line its own.
type evBytes struct {
	n [2]atomic.Uint64
	_ [64 - 16]byte
}

// bytes sums the loops' counts.
func (ls *evLoops) bytes() (in, out uint64) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	for _, c := range ls.counts {
		in += c.n[0].Load()
		out += c.n[1].Load()
	}
	return in, out
}

// next returns the loop for a new connection, starting the loops on first
// use; nil once stopped or when epoll is not available.
func (ls *evLoops) next(p *Proxy) (*evLoop, error) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.stopped {
		return nil, ErrServerClosed
	}
	if ls.loops == nil {
		for range runtime.GOMAXPROCS(0) {
			l, err := newEvLoop(p)
			if err != nil {
				if len(ls.loops) == 0 {
					return nil, err
				}
				break
			}
			ls.loops = append(ls.loops, l)
			ls.counts = append(ls.counts, l.bytes)
			ls.wg.Add(1)
			go func() { defer ls.wg.Done(); l.run() }()
		}
	}
	return ls.loops[int(ls.rr.Add(1))%len(ls.loops)], nil
}

// all returns the loops, starting them if needed.
func (ls *evLoops) all(p *Proxy) ([]*evLoop, error) {
	if _, err := ls.next(p); err != nil {
		return nil, err
	}
	return ls.loopsNow(), nil
}

// loopsNow returns the loops running now.
func (ls *evLoops) loopsNow() []*evLoop {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return append([]*evLoop(nil), ls.loops...)
}

// stop ends the loops and waits for them. Connections still on a loop are
// closed as shut down (Shutdown calls stop only when none is left).
func (ls *evLoops) stop() {
	ls.mu.Lock()
	ls.stopped = true
	for _, l := range ls.loops {
		l.stopping.Store(true)
		l.wakeUp()
	}
	ls.loops = nil // a second stop must not write to closed fds
	ls.mu.Unlock()
	ls.wg.Wait()
}

// evLoopAdmits says whether accepted clients go to a loop from the start.
// The steps a loop does not do (PROXY header, TLS, a custom Dial, idle
// timeout) keep the goroutine path up to routing (handOff).
func (p *Proxy) evLoopAdmits() bool {
	return p.loopsCopy() &&
		p.Dial == nil && len(p.TrustedProxies) == 0
}

// loopsCopy says whether the loops copy for connections (the options
// allow it, whoever did the steps before routing).
func (p *Proxy) loopsCopy() bool {
	return !p.Goroutines && p.TLS == nil && p.BackendTLS == nil && p.IdleTimeout <= 0
}

// useEventLoop says whether the loops copy for this pair of sockets.
func (p *Proxy) useEventLoop(client, backend net.Conn) bool {
	if !p.loopsCopy() {
		return false
	}
	_, ok1 := client.(*net.TCPConn)
	_, ok2 := backend.(*net.TCPConn)
	return ok1 && ok2
}

// evSide is one socket of a pair.
type evSide struct {
	tc         *net.TCPConn // kept so the fd lives, and closed through it; nil for a raw fd
	netpoll.FD              // its Mask is the loop's to change
}

// evPair is a proxied connection owned by a loop. Direction d copies
// side[d] to side[1-d].
type evPair struct {
	p        *Proxy
	pc       *conn // nil until the pair is routed (evCopy)
	release  func()
	loop     *evLoop
	side     [2]evSide
	killed   atomic.Bool
	attached atomic.Bool // on its loop: a kill is posted there
	stage    uint8       // evPreread, evDial, evCopy, evWait
	adm      *evPre      // state of the steps before evCopy; nil after
	replay   *evPre      // in evCopy until a byte moves: to fall back (loop_copy_linux.go)
	mv       *move       // a move under way (loop_move_linux.go); the loop's

	// Owned by the loop once attached.
	pending [2][]byte       // bytes of direction d read but not yet written
	pbuf    [2]*[]byte      // the pooled buffers behind pending
	ended   [2]bool         // direction d saw EOF and half-closed its peer
	n       [2]atomic.Int64 // bytes written, per direction (FIN timeout and fallback look at it; ConnInfo reads it)
	done    bool
}

// Stages of an evPair.
const (
	evPreread = iota // reading the key frame
	evDial           // connecting to side[1]
	evCopy           // routed: copying (loop_copy_linux.go)
)

// evLoop is one epoll loop.
type evLoop struct {
	p        *Proxy
	poll     *netpoll.Poller[*evPair] // the epoll set and its owner of each fd, both sides of a pair
	buf      []byte                   // shared by every connection of the loop
	bytes    *evBytes
	stopping atomic.Bool
	routed   atomic.Int64 // pairs in evCopy (for tests and stats)

	mu        sync.Mutex
	acceptors map[int32]*evAcceptor
	msgs      []evMsg    // posted by kill and by dials in goroutines
	timers    [2]evQueue // preread and dial deadlines (evPreread, evDial)
	fins      [2]evQueue // FIN timeouts by the direction that ended (loop_copy_linux.go)
	running   []evMsg    // the loop's copy of msgs
	due       []evTimer  // the loop's list of expired deadlines
	finDue    []evTimer  // the loop's list of expired FIN deadlines

	moveTimers [2]evQueue // moves: Rehome.Timeout from the start, DrainGrace from the half-close
	moveDue    []evTimer  // the loop's list of expired move deadlines
	moveSeq    uint32     // the loop's; only the loop touches it
	holds      evHolds    // flapping devices held (flap_linux.go); the loop's

	waits   evQueue   // MaxWait of pairs waiting for a turn (loop_pace_linux.go)
	waitDue []evTimer // the loop's list of expired waits
}

func newEvLoop(p *Proxy) (*evLoop, error) {
	poll, err := netpoll.Open[*evPair]()
	if err != nil {
		return nil, err
	}
	l := &evLoop{p: p, poll: poll, buf: make([]byte, evBufSize), bytes: &evBytes{},
		acceptors: make(map[int32]*evAcceptor)}
	l.timers[evPreread].d, l.timers[evDial].d = p.prereadTimeout(), p.dialTimeout()
	fins := p.finTimeouts()
	l.fins[0].d, l.fins[1].d = fins[0], fins[1]
	l.moveTimers[0].d, l.moveTimers[1].d = p.Rehome.timeout(), p.Rehome.drainGrace()
	return l, nil
}

// run waits for readiness and copies until stop. Named for stack dumps.
func (l *evLoop) run() {
	defer l.poll.Close()
	var events [256]netpoll.Event
	var batch [256]*evPair
	for {
		l.loopExpire()
		n, err := l.poll.Wait(events[:])
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			l.p.log.Error("event loop: epoll_wait failed; closing its connections", zap.Error(err))
			l.loopCloseAll(false)
			return
		}
		woken := l.poll.Owners(events[:n], batch[:n])
		for i := range n {
			if pr := batch[i]; pr != nil && !pr.done { // done: closed earlier in this batch
				l.loopEvent(pr, int(events[i].Fd), events[i].Events)
			} else if netpoll.IsListener(&events[i]) {
				l.loopAccept(events[i].Fd)
			}
			batch[i] = nil
		}
		if woken {
			l.loopMsgs()
			if l.stopping.Load() {
				l.loopCloseAll(false)
				return
			}
		}
	}
}

// loopEvent acts on the events of one fd of pr.
func (l *evLoop) loopEvent(pr *evPair, fd int, events uint32) {
	if pr.killed.Load() {
		l.loopClose(pr, ReasonShutdown, nil) // conn.close set the reason
		return
	}
	switch pr.stage {
	case evPreread:
		if fd == pr.side[0].Fd {
			l.loopPreread(pr, events)
		}
		return
	case evDial:
		l.loopConnectEvent(pr, fd, events)
		return
	case evWait:
		l.loopWaitEvent(pr, fd, events)
		return
	}
	if pr.mv != nil {
		l.loopMoveEvent(pr, fd, events)
		return
	}
	i := 0
	if pr.side[1].Fd == fd {
		i = 1
	} else if pr.side[0].Fd != fd {
		return // stale: the fd now belongs to another pair
	}
	if events&(netpoll.Out|netpoll.Hup) != 0 && pr.pending[1-i] != nil {
		l.loopFlush(pr, 1-i)
	}
	if !pr.done && events&(netpoll.In|netpoll.Hup) != 0 && pr.reading(i) {
		l.loopRead(pr, i)
	}
	if !pr.done && pr.stage == evCopy { // else it fell back to dialing
		l.loopRearm(pr)
	}
}

// evMsg is work for a loop from another goroutine: close pr, or (dialled)
// the result of a dial for it.
type evMsg struct {
	pr        *evPair
	unrouted  bool  // close every unrouted pair (refuseUnrouted)
	move      *move // start moving pr (startMove)
	lostCheck bool  // the check of pr's lost backend answered: gone or not
	gone      bool
	dialled   bool
	gen       uint32
	bc        net.Conn
	err       error

	turn *waiter // pr's turn to dial came (loop_pace_linux.go)
}

// post queues pr for the loop to close.
func (l *evLoop) post(pr *evPair) { l.send(evMsg{pr: pr}) }

func (l *evLoop) send(m evMsg) {
	l.mu.Lock()
	l.msgs = append(l.msgs, m)
	first := len(l.msgs) == 1
	l.mu.Unlock()
	if first {
		l.wakeUp()
	}
}

func (l *evLoop) wakeUp() { l.poll.Wake() }

// loopMsgs drains the wake pipe and does what was posted.
func (l *evLoop) loopMsgs() {
	l.poll.DrainWake()
	l.mu.Lock()
	l.running, l.msgs = l.msgs, l.running[:0]
	l.mu.Unlock()
	for i, m := range l.running {
		switch {
		case m.unrouted:
			l.loopCloseAll(true)
		case m.dialled:
			l.loopDialled(m)
		case m.move != nil:
			l.loopMoveStart(m.pr, m.move)
		case m.turn != nil:
			l.loopTurn(m.pr, m.turn)
		case m.lostCheck:
			l.loopLostResult(m.pr, m.gen, m.gone)
		case !m.pr.done:
			l.loopClose(m.pr, ReasonShutdown, nil) // conn.close set the reason
		}
		l.running[i] = evMsg{}
	}
}

// refuseUnrouted closes every pair still in its preread or dial (Shutdown
// past its deadline: routed ones are closed through the table). Each loop
// picks them itself: a pair's stage is the loop's to read.
func (ls *evLoops) refuseUnrouted() {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	for _, l := range ls.loops {
		l.send(evMsg{unrouted: true})
	}
}

// loopCloseAll closes the pairs on the loop as shut down: every one when the
// loop stops, or only those not routed yet (refuseUnrouted).
func (l *evLoop) loopCloseAll(unroutedOnly bool) {
	var left []*evPair
	l.poll.Each(func(fd int32, pr *evPair) { // once per pair: by its client's fd
		if !pr.done && int32(pr.side[0].Fd) == fd && !(unroutedOnly && pr.stage == evCopy) {
			left = append(left, pr)
		}
	})
	for _, pr := range left {
		if !pr.done {
			l.loopClose(pr, ReasonShutdown, nil)
		}
	}
}

// listenSockOpts sets TCP_NODELAY and keepalive (if keepAlive >= 0) on
// a listening socket for its accepted sockets to inherit.
var listenSockOpts = func(fd int, keepAlive time.Duration) error {
	return netpoll.SetSockOpts(fd, keepAliveIdle(keepAlive))
}
