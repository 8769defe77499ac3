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

	"go.uber.org/zap"
)

// The event-driven copy path (Proxy.EventLoop). Each loop is a goroutine
// with its own epoll instance (GOMAXPROCS of them); a routed connection
// pair is handed to one of them, round-robin, and handle returns, so an
// idle device costs no goroutine, no stack and no splice pipe: only its two
// sockets and an evPair (about 1.4 KB of heap). A loop never blocks in
// epoll_wait: it polls with a zero timeout and, when nothing is ready,
// parks in Go's netpoller on the epoll fd itself, so waking it costs a
// goroutine switch rather than a thread wakeup and a P handoff.
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
// Go's netpoller keeps the sockets registered too; it is harmless as no
// goroutine reads or writes them. Only the loop closes them (through the
// *net.TCPConn, after EPOLL_CTL_DEL); conn.close only shuts them down,
// which wakes the loop with EOF or EPOLLHUP.

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
		syscall.Write(l.wake[1], []byte{1})
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
	tc   *net.TCPConn // kept so the fd lives, and closed through it
	rc   syscall.RawConn
	fd   int
	mask uint32 // events in the loop's epoll set; 0: not in it (owned by the loop)
}

// evPair is a proxied connection owned by a loop. Direction d copies
// side[d] to side[1-d].
type evPair struct {
	p       *Proxy
	pc      *conn
	release func()
	loop    *evLoop
	side    [2]evSide
	killed  atomic.Bool

	// Owned by the loop once attached.
	pending [2][]byte  // bytes of direction d read but not yet written
	pbuf    [2]*[]byte // the pooled buffers behind pending
	ended   [2]bool    // direction d saw EOF and half-closed its peer
	n       [2]int64   // bytes written, per direction
	done    bool
}

// newEvPair prepares pc for a loop; evAttach hands it over. It fails (and
// the caller copies with goroutines) when epoll or a raw fd is unavailable.
func (p *Proxy) newEvPair(pc *conn, release func()) (*evPair, error) {
	l, err := p.loops.pick(p)
	if err != nil {
		return nil, fmt.Errorf("event loop: %w", err)
	}
	pr := &evPair{p: p, pc: pc, release: release, loop: l}
	for i, c := range [2]net.Conn{pc.client, pc.backend} {
		s := &pr.side[i]
		s.tc = c.(*net.TCPConn)
		if s.rc, err = s.tc.SyscallConn(); err != nil {
			return nil, fmt.Errorf("event loop: raw conn: %w", err)
		}
		if err = s.rc.Control(func(fd uintptr) { s.fd = int(fd) }); err != nil {
			return nil, fmt.Errorf("event loop: raw conn: %w", err)
		}
	}
	return pr, nil
}

// kill wakes the loop to close the pair: both sockets shut down read EOF
// and report EPOLLHUP. RawConn.Control holds a reference on the fd, so a
// pair the loop has closed already is left alone (the fd number may have
// been reused).
func (pr *evPair) kill() {
	pr.killed.Store(true)
	for i := range pr.side {
		pr.side[i].rc.Control(func(fd uintptr) { syscall.Shutdown(int(fd), syscall.SHUT_RDWR) })
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
	if err != nil {
		p.log.Error("event loop: epoll add failed", zap.Error(err))
		pr.pc.setReason(ReasonShutdown)
		l.finalize(pr)
	}
}

// evLoop is one epoll loop.
type evLoop struct {
	p    *Proxy
	epfd int
	ep   *os.File // epfd in Go's netpoller: the loop parks there, not in epoll_wait
	rc   syscall.RawConn
	wake [2]int // a pipe: stop writes a byte
	buf  []byte // shared by every connection of the loop

	mu    sync.Mutex
	pairs map[int32]*evPair // by fd, both sides
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
	l := &evLoop{p: p, epfd: epfd, ep: os.NewFile(uintptr(epfd), "epoll"), buf: make([]byte, evBufSize),
		pairs: make(map[int32]*evPair)}
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

// run waits for readiness and copies until stop. Named for stack dumps.
func (l *evLoop) run() {
	defer l.closeFDs()
	var events [256]syscall.EpollEvent
	var batch [256]*evPair
	for {
		// epoll_wait never blocks here: when nothing is ready the goroutine
		// parks in Go's netpoller until the epoll fd is readable. A loop
		// blocked in the syscall costs a thread wakeup and a P handoff on
		// every event (+20-30 us per round trip, measured).
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
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			l.p.log.Error("event loop: epoll_wait failed; closing its connections", zap.Error(err))
			l.closeAll()
			return
		}
		stop := false
		l.mu.Lock()
		for i := range n {
			if events[i].Fd == int32(l.wake[0]) {
				stop = true
			}
			batch[i] = l.pairs[events[i].Fd]
		}
		l.mu.Unlock()
		for i := range n {
			if pr := batch[i]; pr != nil && !pr.done { // done: finalized earlier in this batch
				l.handle(pr, int(events[i].Fd), events[i].Events)
			}
			batch[i] = nil
		}
		if stop {
			l.closeAll()
			return
		}
	}
}

// finalize takes pr out of the loop, closes both sockets and does what
// handle does after pipe.
func (l *evLoop) finalize(pr *evPair) {
	pr.done = true
	for i := range pr.side {
		if s := &pr.side[i]; s.mask != 0 {
			syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_DEL, s.fd, nil)
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
	pr.pc.setReason(ReasonClientClosed) // as pipe: no-op if a reason was set
	pr.side[0].tc.Close()
	pr.side[1].tc.Close()
	pr.p.finish(pr.pc, pr.n[0], pr.n[1])
	pr.p.endConn(pr.release)
}

// closeAll finalizes every pair left on the loop, as shut down.
func (l *evLoop) closeAll() {
	l.mu.Lock()
	var left []*evPair
	for _, pr := range l.pairs {
		if !pr.done {
			pr.done = true // each pair is in the map twice
			left = append(left, pr)
		}
	}
	l.mu.Unlock()
	for _, pr := range left {
		pr.pc.setReason(ReasonShutdown)
		l.finalize(pr)
	}
}

// evConns is the number of connections on event loops (for tests).
func (p *Proxy) evConns() int {
	p.loops.mu.Lock()
	defer p.loops.mu.Unlock()
	n := 0
	for _, l := range p.loops.loops {
		l.mu.Lock()
		n += len(l.pairs) / 2
		l.mu.Unlock()
	}
	return n
}

// evLoopFDs is the number of fds the loops hold themselves (for tests).
func (p *Proxy) evLoopFDs() int {
	p.loops.mu.Lock()
	defer p.loops.mu.Unlock()
	return 3 * len(p.loops.loops) // epoll and a wake pipe
}
