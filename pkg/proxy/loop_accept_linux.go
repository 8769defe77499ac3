//go:build linux

package proxy

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/devgate/devgate/pkg/proxy/internal/netpoll"
)

// Accepting on the loops: Serve puts a *net.TCPListener in every loop's
// epoll set (EPOLLEXCLUSIVE: a connection wakes one loop), and the loop
// that wakes accepts with accept4 and hands the sockets out round-robin. A client socket
// then never enters Go's netpoller and needs no goroutine hop: no
// epoll_ctl pair, getsockname or TCP_NODELAY call per connection (Listen
// sets it once for accepted sockets to inherit).

// evListener is a listener served by the loops.
type evListener struct {
	rc       syscall.RawConn
	fd       int
	inherits bool          // accepted sockets have TCP_NODELAY and keepalive
	done     chan struct{} // closed when a loop finds the listener closed
	once     sync.Once
	doneErr  error
}

// evAcceptor is a listener's entry in one loop.
type evAcceptor struct {
	el     *evListener
	pause  time.Duration // accept-error backoff
	until  time.Time     // out of the epoll set until then
	inSet  bool
	closed bool

	// accept runs under el.rc.Control with its results in the fields
	// below: made once, so an accept allocates no closure.
	accept    func(fd uintptr)
	acceptFD  int
	acceptRem netip.AddrPort
	acceptErr error
}

// evServe serves tl from the loops until it is closed (stop: by the proxy);
// ok false when the loops cannot (the caller accepts in a goroutine).
func (p *Proxy) evServe(tl *net.TCPListener, inherits bool, stop <-chan struct{}) (err error, ok bool) {
	if !p.evLoopAdmits() {
		return nil, false
	}
	el := &evListener{inherits: inherits, done: make(chan struct{})}
	if el.rc, err = tl.SyscallConn(); err != nil {
		return nil, false
	}
	if el.rc.Control(func(fd uintptr) { el.fd = int(fd) }) != nil {
		return nil, false
	}
	loops, err := p.loops.all(p)
	if err != nil {
		return nil, false
	}
	var added []*evLoop
	for _, l := range loops {
		if err := l.addListener(el); err != nil {
			for _, a := range added {
				a.removeListener(el)
			}
			p.log.Warn("event loop: cannot watch the listener; accepting in a goroutine", zap.Error(err))
			return nil, false
		}
		added = append(added, l)
	}
	// A listener closed other than by StopAccepting leaves the epoll sets
	// without an event: look at it now and then.
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var closedErr error
	for open := true; open; {
		select {
		case <-el.done: // a loop found it closed: doneErr is set
			closedErr, open = el.doneErr, false
		case <-stop:
			open = false
		case <-tick.C:
			if el.rc.Control(func(uintptr) {}) != nil {
				closedErr, open = net.ErrClosed, false
			}
		}
	}
	for _, l := range added {
		l.removeListener(el)
	}
	select {
	case <-stop:
		return ErrServerClosed, true
	default:
		return closedErr, true
	}
}

func (l *evLoop) addListener(el *evListener) error {
	a := &evAcceptor{el: el}
	a.accept = func(fd uintptr) { a.acceptFD, a.acceptRem, a.acceptErr = netpoll.Accept(int(fd)) }
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.watchListener(a); err != nil {
		return err
	}
	l.acceptors[int32(el.fd)] = a
	return nil
}

// watchListener puts a's listener in the epoll set (l.mu held). Control
// keeps the fd from being closed (and its number reused) meanwhile.
func (l *evLoop) watchListener(a *evAcceptor) error {
	var err error
	cerr := a.el.rc.Control(func(fd uintptr) { err = l.poll.AddListener(int(fd)) })
	if cerr != nil {
		return cerr
	}
	if err == nil {
		a.inSet = true
	}
	return err
}

func (l *evLoop) unwatchListener(a *evAcceptor) {
	if a.inSet {
		a.el.rc.Control(func(fd uintptr) { l.poll.DeleteListener(int(fd)) })
		a.inSet = false
	}
}

func (l *evLoop) removeListener(el *evListener) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if a := l.acceptors[int32(el.fd)]; a != nil && a.el == el {
		l.unwatchListener(a)
		delete(l.acceptors, int32(el.fd))
	}
}

// loopAccept takes the connections waiting on a listener, a bounded batch per
// event so the loop's other sockets are not starved by a storm.
func (l *evLoop) loopAccept(fd int32) {
	l.mu.Lock()
	a := l.acceptors[fd]
	l.mu.Unlock()
	if a == nil || a.closed {
		return
	}
	p := l.p
	for range 64 {
		if a.el.rc.Control(a.accept) != nil {
			l.loopListenerClosed(a, net.ErrClosed)
			return
		}
		err := a.acceptErr
		switch {
		case err == nil:
			a.pause = 0
			l.loopAdopt(a.el, a.acceptFD, a.acceptRem)
		case err == syscall.EAGAIN:
			return
		case err == syscall.ECONNABORTED || err == syscall.EINTR:
		case err == syscall.EINVAL || err == syscall.EBADF: // shut down or not listening
			l.loopListenerClosed(a, &net.OpError{Op: "accept", Net: "tcp", Err: err})
			return
		default:
			if p.Draining() {
				return
			}
			// Out of files or memory: stop watching for a while rather
			// than spin on a level-triggered listener.
			a.pause = min(max(2*a.pause, 5*time.Millisecond), time.Second)
			p.acceptFailed(err, a.pause)
			a.until = time.Now().Add(a.pause)
			l.mu.Lock()
			l.unwatchListener(a)
			l.mu.Unlock()
			return
		}
	}
}

func (l *evLoop) loopListenerClosed(a *evAcceptor, err error) {
	a.closed = true
	l.mu.Lock()
	l.unwatchListener(a)
	l.mu.Unlock()
	a.el.once.Do(func() {
		a.el.doneErr = err
		close(a.el.done)
	})
}

// loopResumeAccepts puts paused listeners back once their pause is over, and
// returns the earliest pause still running (zero if none). l.mu held.
func (l *evLoop) loopResumeAccepts(now time.Time) (next time.Time) {
	for _, a := range l.acceptors {
		if a.inSet || a.closed || a.until.IsZero() {
			continue
		}
		if now.Before(a.until) {
			if next.IsZero() || a.until.Before(next) {
				next = a.until
			}
			continue
		}
		a.until = time.Time{}
		if err := l.watchListener(a); err != nil && !errors.Is(err, syscall.EEXIST) {
			a.closed = true // closed meanwhile; Serve learns it from its own wait
		}
	}
	return next
}

// loopAdopt takes a socket the loop accepted through the steps evAccept does
// for one Serve accepted.
func (l *evLoop) loopAdopt(el *evListener, fd int, remote netip.AddrPort) {
	p := l.p
	p.stats.accepted.Add(1)
	closeFD := func() { netpoll.Close(fd) }
	if p.refuseOverCap(closeFD) {
		return
	}
	release, ok := p.admitToLoop(remote.Addr(), remote, closeFD)
	if !ok {
		return
	}
	if !el.inherits {
		if err := netpoll.SetSockOpts(fd, keepAliveIdle(p.KeepAlive)); err != nil {
			p.badLog.Warn("accepted socket: options not set", zap.Error(err))
		}
	}
	// Round-robin, as Serve hands out: the loop that wins a burst of
	// accepts must not keep the whole burst.
	if t, err := p.loops.next(p); err == nil {
		l = t
	}
	l.takeClient(nil, fd, remote, release, nil)
}

// evAccept hands a client Serve accepted to a loop; false when the caller
// must take it (no loop for it).
func (p *Proxy) evAccept(c net.Conn, inheritsKeepAlive bool) bool {
	tc, ok := c.(*net.TCPConn)
	if !ok || !p.evLoopAdmits() {
		return false
	}
	l, err := p.loops.next(p)
	if err != nil {
		return false
	}
	release, ok := p.admitToLoop(addrIP(c.RemoteAddr()), c.RemoteAddr(), func() { c.Close() })
	if !ok {
		return true
	}
	if !inheritsKeepAlive {
		p.setKeepAlive(c)
	}
	fd, err := netpoll.RawFD(tc)
	l.takeClient(tc, fd, tcpAddrPort(c.RemoteAddr()), release, err)
	return true
}

// takeClient puts an admitted client (tc, or the raw fd the loop accepted
// when tc is nil) on l, waiting for its key frame under the preread
// deadline; err is why it cannot be (then it is refused as shut down).
func (l *evLoop) takeClient(tc *net.TCPConn, fd int, remote netip.AddrPort, release func(), err error) {
	p := l.p
	bp := prereadPool.Get().(*[]byte)
	pr := &evPair{p: p, release: release, loop: l, stage: evPreread,
		adm: &evPre{c: tc, remote: remote, bp: bp, buf: (*bp)[:0], start: time.Now()}}
	pr.side[0].tc, pr.side[0].Fd, pr.side[1].Fd = tc, fd, -1
	if err == nil {
		err = l.register(pr)
	}
	if err != nil {
		p.log.Error("event loop: cannot take a connection", zap.Error(err))
		p.putBuf(bp, (*bp)[:0])
		pr.side[0].close()
		p.end(ending{reason: ReasonShutdown, release: release})
	}
}

// register puts a new pair's client in the loop's epoll set, and its
// preread deadline in the loop's queue.
func (l *evLoop) register(pr *evPair) error {
	pr.attached.Store(true)
	at := pr.adm.start.Add(l.timers[evPreread].d) // pr is the loop's once added
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.poll.Add(pr, netpoll.In, &pr.side[0].FD); err != nil {
		return err
	}
	l.timers[evPreread].push(evTimer{at: at, pr: pr})
	return nil
}

// tcpAddrPort is a's address and port (zero if a is not TCP).
func tcpAddrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort()
	}
	return netip.AddrPort{}
}
