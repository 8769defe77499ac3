//go:build linux

package proxy

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// The event-driven path (Proxy.EventLoop). Each loop is a goroutine with
// its own epoll instance (GOMAXPROCS of them). The loops accept from a
// *net.TCPListener themselves (evaccept_linux.go; from other listeners
// Serve accepts) and share the clients out round-robin; a loop reads the
// key frame, dials the owner and copies (evadmit_linux.go). Where it
// cannot do the steps before routing (PROXY header, TLS, a custom Dial),
// Serve accepts, handle does them in a goroutine and hands the routed
// pair over (evAttach). Either way an idle device costs no goroutine, no
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

// evEOFReason is the end reason of each direction: 0 copies client to
// backend, 1 backend to client.
var evEOFReason = [2]string{ReasonClientClosed, ReasonBackendClosed}

// evLoops is the proxy's set of loops: started on first use, stopped by
// Shutdown once no connection is left.
type evLoops struct {
	mu      sync.Mutex
	loops   []*evLoop
	stopped bool
	next    atomic.Uint32
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

// pick returns the loop for a new connection, starting the loops on first
// use; nil once stopped or when epoll is not available.
func (ls *evLoops) pick(p *Proxy) (*evLoop, error) {
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
	return ls.loops[int(ls.next.Add(1))%len(ls.loops)], nil
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

// useEventLoop says whether EventLoop applies to this pair of sockets.
func (p *Proxy) useEventLoop(client, backend net.Conn) bool {
	if !p.EventLoop || p.TLS != nil || p.BackendTLS != nil || p.IdleTimeout > 0 {
		return false
	}
	_, ok1 := client.(*net.TCPConn)
	_, ok2 := backend.(*net.TCPConn)
	return ok1 && ok2
}

// evSide is one socket of a pair.
type evSide struct {
	tc   *net.TCPConn // kept so the fd lives, and closed through it; nil for a raw fd
	fd   int
	mask uint32 // events in the loop's epoll set; 0: not in it (owned by the loop)
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
	stage    uint8       // evPreread, evDial, evCopy
	adm      *evPre      // state of the steps before evCopy; nil after
	replay   *evPre      // in evCopy until a byte moves: to fall back (evfirst_linux.go)

	// Owned by the loop once attached.
	pending [2][]byte  // bytes of direction d read but not yet written
	pbuf    [2]*[]byte // the pooled buffers behind pending
	ended   [2]bool    // direction d saw EOF and half-closed its peer
	n       [2]int64   // bytes written, per direction (FIN timeout and fallback look at it)
	done    bool
}

// newEvPair prepares pc for a loop; evAttach hands it over. It fails (and
// the caller copies with goroutines) when epoll or a raw fd is unavailable.
func (p *Proxy) newEvPair(pc *conn, release func()) (*evPair, error) {
	l, err := p.loops.pick(p)
	if err != nil {
		return nil, fmt.Errorf("event loop: %w", err)
	}
	pr := &evPair{p: p, pc: pc, release: release, loop: l, stage: evCopy}
	for i, c := range [2]net.Conn{pc.client, pc.backend} {
		s := &pr.side[i]
		s.tc = c.(*net.TCPConn)
		if s.fd, err = rawFD(s.tc); err != nil {
			return nil, fmt.Errorf("event loop: raw conn: %w", err)
		}
	}
	return pr, nil
}

// kill asks the loop to close the pair. Only the loop touches its fds: a
// number closed there may already belong to another socket.
func (pr *evPair) kill() {
	pr.killed.Store(true)
	if pr.attached.Load() { // else evAttach sees killed and posts it
		pr.loop.post(pr)
	}
}

// evAttach hands pr to its loop; from now on the loop finishes it.
func (p *Proxy) evAttach(pr *evPair) {
	l := pr.loop
	l.mu.Lock()
	var err error
	for i := range pr.side {
		s := &pr.side[i]
		l.pairs[int32(s.fd)] = pr
		ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(s.fd)}
		if err = syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_ADD, s.fd, &ev); err != nil {
			break
		}
		s.mask = syscall.EPOLLIN
	}
	if err != nil { // the loop has not seen the pair: it never got past the lock
		for i := range pr.side {
			if s := &pr.side[i]; s.mask != 0 {
				syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_DEL, s.fd, nil)
				s.mask = 0
			}
			delete(l.pairs, int32(pr.side[i].fd))
		}
	}
	l.mu.Unlock()
	l.routed.Add(1) // finalize takes it back
	if err != nil {
		p.log.Error("event loop: epoll add failed", zap.Error(err))
		pr.pc.setReason(ReasonShutdown)
		l.finalize(pr)
		return
	}
	pr.attached.Store(true)
	if pr.killed.Load() {
		l.post(pr)
	}
}

// evLoop is one epoll loop.
type evLoop struct {
	p        *Proxy
	epfd     int
	ep       *os.File // epfd in Go's netpoller: the loop parks there, not in epoll_wait
	rc       syscall.RawConn
	wake     [2]int // a pipe: a byte means kills are queued or the loop stops
	buf      []byte // shared by every connection of the loop
	bytes    *evBytes
	stopping atomic.Bool
	routed   atomic.Int64 // pairs in evCopy (for tests and stats)
	parkedTo time.Time    // the read deadline set on ep; zero: none

	mu        sync.Mutex
	pairs     map[int32]*evPair // by fd, both sides
	acceptors map[int32]*evAcceptor
	msgs      []evMsg    // posted by kill and by dials in goroutines
	timers    [2]evQueue // preread and dial deadlines (evPreread, evDial)
	fins      [2]evQueue // FIN timeouts by the direction that ended (evfin_linux.go)
	running   []evMsg    // the loop's copy of msgs
	due       []evTimer  // the loop's list of expired deadlines
	finDue    []evTimer  // the loop's list of expired FIN deadlines
}

func newEvLoop(p *Proxy) (*evLoop, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	if err := syscall.SetNonblock(epfd, true); err != nil {
		syscall.Close(epfd)
		return nil, fmt.Errorf("epoll nonblock: %w", err)
	}
	l := &evLoop{p: p, epfd: epfd, ep: os.NewFile(uintptr(epfd), "epoll"), buf: make([]byte, evBufSize), bytes: &evBytes{},
		pairs: make(map[int32]*evPair), acceptors: make(map[int32]*evAcceptor)}
	l.timers[evPreread].d, l.timers[evDial].d = p.prereadTimeout(), p.dialTimeout()
	fins := p.finTimeouts()
	l.fins[0].d, l.fins[1].d = fins[0], fins[1]
	if l.rc, err = l.ep.SyscallConn(); err != nil {
		l.ep.Close()
		return nil, fmt.Errorf("epoll raw conn: %w", err)
	}
	if err := syscall.Pipe2(l.wake[:], syscall.O_NONBLOCK|syscall.O_CLOEXEC); err != nil {
		l.ep.Close()
		return nil, fmt.Errorf("pipe2: %w", err)
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(l.wake[0])}
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, l.wake[0], &ev); err != nil {
		l.closeFDs()
		return nil, fmt.Errorf("epoll_ctl: %w", err)
	}
	return l, nil
}

func (l *evLoop) closeFDs() {
	syscall.Close(l.wake[0])
	syscall.Close(l.wake[1])
	l.ep.Close()
}

// evMsg is work for a loop from another goroutine: close pr, or (dialled)
// the result of a dial for it.
type evMsg struct {
	pr       *evPair
	unrouted bool // close every unrouted pair (killUnrouted)
	dialled  bool
	gen      uint32
	bc       net.Conn
	err      error
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

func (l *evLoop) wakeUp() { syscall.Write(l.wake[1], []byte{1}) }

// run waits for readiness and copies until stop. Named for stack dumps.
func (l *evLoop) run() {
	defer l.closeFDs()
	var events [256]syscall.EpollEvent
	var batch [256]*evPair
	for {
		l.expire()
		// epoll_wait never blocks here: when nothing is ready the goroutine
		// parks in Go's netpoller until the epoll fd is readable (or the next
		// deadline). A loop blocked in the syscall costs a thread wakeup and
		// a P handoff on every event (+20-30 us per round trip, measured).
		var n int
		var err error
		rerr := l.rc.Read(func(uintptr) bool {
			n, err = syscall.EpollWait(l.epfd, events[:], 0)
			return n != 0 || err != nil
		})
		if err == nil {
			err = rerr
		}
		if err != nil {
			if errors.Is(err, syscall.EINTR) || errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			l.p.log.Error("event loop: epoll_wait failed; closing its connections", zap.Error(err))
			l.closeAll()
			return
		}
		woken := false
		l.mu.Lock()
		for i := range n {
			if events[i].Fd == int32(l.wake[0]) {
				woken = true
			}
			if events[i].Pad != evListenerTag {
				batch[i] = l.pairs[events[i].Fd]
			}
		}
		l.mu.Unlock()
		for i := range n {
			if pr := batch[i]; pr != nil && !pr.done { // done: finalized earlier in this batch
				l.handle(pr, int(events[i].Fd), events[i].Events)
			} else if events[i].Pad == evListenerTag {
				l.accept(events[i].Fd)
			}
			batch[i] = nil
		}
		if woken {
			l.runMsgs()
			if l.stopping.Load() {
				l.closeAll()
				return
			}
		}
	}
}

// runMsgs drains the wake pipe and does what was posted.
func (l *evLoop) runMsgs() {
	var b [64]byte
	for {
		if n, _ := syscall.Read(l.wake[0], b[:]); n < len(b) {
			break
		}
	}
	l.mu.Lock()
	l.running, l.msgs = l.msgs, l.running[:0]
	l.mu.Unlock()
	for i, m := range l.running {
		switch {
		case m.unrouted:
			l.closeUnroutedAll()
		case m.dialled:
			l.dialled(m)
		case !m.pr.done:
			l.finalize(m.pr)
		}
		l.running[i] = evMsg{}
	}
}

// finalize takes pr out of the loop, closes both sockets and does what
// handle does after pipe.
func (l *evLoop) finalize(pr *evPair) {
	if pr.stage != evCopy { // a kill or the loop stopping before routing
		l.refuse(pr, ReasonShutdown)
		return
	}
	pr.done = true
	l.routed.Add(-1)
	for i := range pr.side {
		if s := &pr.side[i]; s.mask != 0 {
			if s.tc != nil { // a raw fd leaves epoll when closed
				syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_DEL, s.fd, nil)
			}
			s.mask = 0
		}
	}
	l.mu.Lock()
	for i := range pr.side {
		if l.pairs[int32(pr.side[i].fd)] == pr {
			delete(l.pairs, int32(pr.side[i].fd))
		}
	}
	l.mu.Unlock()
	for d := range pr.pbuf {
		if pr.pbuf[d] != nil {
			evPendingPool.Put(pr.pbuf[d])
			pr.pbuf[d], pr.pending[d] = nil, nil
		}
	}
	l.dropReplay(pr)
	pr.pc.setReason(ReasonClientClosed) // as pipe: no-op if a reason was set
	pr.side[0].close()
	pr.side[1].close()
	pr.p.finish(pr.pc)
	pr.p.endConn(pr.release)
}

// closeAll finalizes every pair left on the loop, as shut down.
func (l *evLoop) closeAll() {
	l.mu.Lock()
	var left []*evPair
	seen := make(map[*evPair]bool, len(l.pairs))
	for _, pr := range l.pairs { // a pair is in the map once per side
		if !pr.done && !seen[pr] {
			seen[pr] = true
			left = append(left, pr)
		}
	}
	l.mu.Unlock()
	for _, pr := range left {
		if pr.pc != nil {
			pr.pc.setReason(ReasonShutdown)
		}
		l.finalize(pr)
	}
}

// killUnrouted closes every pair still in its preread or dial (Shutdown
// past its deadline: routed ones are closed through the table). Each loop
// picks them itself: a pair's stage is the loop's to read.
func (ls *evLoops) killUnrouted() {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	for _, l := range ls.loops {
		l.send(evMsg{unrouted: true})
	}
}

// closeUnroutedAll is killUnrouted on the loop.
func (l *evLoop) closeUnroutedAll() {
	l.mu.Lock()
	var unrouted []*evPair
	for fd, pr := range l.pairs {
		if pr.stage != evCopy && !pr.done && int32(pr.side[0].fd) == fd {
			unrouted = append(unrouted, pr)
		}
	}
	l.mu.Unlock()
	for _, pr := range unrouted {
		if !pr.done {
			l.finalize(pr)
		}
	}
}

// rawFD is tc's file descriptor; tc keeps it open.
func rawFD(tc *net.TCPConn) (int, error) {
	rc, err := tc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	if err := rc.Control(func(f uintptr) { fd = int(f) }); err != nil {
		return -1, err
	}
	return fd, nil
}

// close closes the socket: through its *net.TCPConn when it has one, else
// the raw fd the loop dialled (closing it also takes it out of epoll).
func (s *evSide) close() {
	switch {
	case s.tc != nil:
		s.tc.Close()
	case s.fd >= 0:
		syscall.Close(s.fd)
	}
}

// evConns is the number of proxied connections on event loops (for tests).
func (p *Proxy) evConns() int {
	p.loops.mu.Lock()
	defer p.loops.mu.Unlock()
	n := 0
	for _, l := range p.loops.loops {
		n += int(l.routed.Load())
	}
	return n
}

// evLoopFDs is the number of fds the loops hold themselves (for tests).
func (p *Proxy) evLoopFDs() int {
	p.loops.mu.Lock()
	defer p.loops.mu.Unlock()
	return 3 * len(p.loops.loops) // epoll and a wake pipe
}

// listenSockOpts sets TCP_NODELAY and keepalive (if keepAlive >= 0) on
// a listening socket for its accepted sockets to inherit.
var listenSockOpts = setSockOpts
