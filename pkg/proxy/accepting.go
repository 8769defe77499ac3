package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"
)

// Draining a replica closes its listeners, so new devices are refused at
// once (and a balancer's TCP check fails) instead of waiting in a backlog
// nobody accepts from; undraining opens them again on the same addresses.
// Each Serve call keeps its place meanwhile: it waits for the new listener.

// Listen opens a TCP listener for Serve whose sockets carry TCP_NODELAY
// and the proxy's keepalive: set once on the listening socket, Linux
// copies them to every accepted one, which saves setsockopt calls on each
// accept.
func (p *Proxy) Listen(ctx context.Context, network, addr string) (net.Listener, error) {
	p.init()
	lc := net.ListenConfig{KeepAlive: -1}
	inherit := listenSockOpts != nil
	if inherit {
		lc.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) { serr = listenSockOpts(int(fd), p.KeepAlive) }); err != nil {
				return err
			}
			return serr
		}
	}
	l, err := lc.Listen(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	if p.inherit == nil {
		p.inherit = make(map[net.Listener]bool)
	}
	p.inherit[l] = inherit || p.KeepAlive < 0
	p.mu.Unlock()
	return l, nil
}

// Serve accepts connections on l until Shutdown or Close, and returns
// ErrServerClosed then. Temporary accept errors (such as running out of
// file descriptors) are retried with a growing pause instead of a busy loop.
// While accepting is stopped (StopAccepting) Serve waits, and after
// ResumeAccepting accepts on a new listener on l's address; a listener other
// than a *net.TCPListener cannot be opened again, so Serve returns
// ErrServerClosed when StopAccepting closes it.
func (p *Proxy) Serve(l net.Listener) error {
	if p.Source == nil {
		return errors.New("proxy: Source is nil")
	}
	p.init()
	s := &serving{wake: make(chan struct{}, 1)}
	if _, ok := l.(*net.TCPListener); ok {
		s.addr = l.Addr()
	}
	if !p.track(s, l) {
		l.Close()
		return ErrServerClosed
	}
	defer p.untrack(s)
	for {
		l, stop, err := p.nextListener(s)
		if err != nil {
			return err
		}
		err = p.serveListener(l, stop)
		p.forget(l)
		select {
		case <-stop: // closed by StopAccepting or Shutdown, not by its owner
		default:
			return err
		}
	}
}

// serveListener accepts on l until l is closed; stop is closed when the
// proxy closed it (then it returns ErrServerClosed).
func (p *Proxy) serveListener(l net.Listener, stop <-chan struct{}) error {
	inherits := p.inheritsKeepAlive(l)
	if tl, ok := l.(*net.TCPListener); ok {
		if err, ok := p.evServe(tl, inherits, stop); ok {
			return err
		}
	}

	var pause time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			select {
			case <-stop:
				return ErrServerClosed
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			pause = min(max(2*pause, 5*time.Millisecond), time.Second)
			p.acceptFailed(err, pause)
			time.Sleep(pause)
			continue
		}
		pause = 0
		p.stats.accepted.Add(1)
		if p.refuseOverCap(func() { c.Close() }) {
			continue
		}
		if p.evAccept(c, inherits) {
			continue
		}
		if !p.startConn(c) {
			c.Close()
			p.count(ReasonShutdown)
			continue
		}
		go p.serveConn(c, inherits)
	}
}

func (p *Proxy) inheritsKeepAlive(l net.Listener) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.inherit[l]
}

// serving is one Serve call.
type serving struct {
	l    net.Listener  // accepted on now; nil while accepting is stopped (p.mu)
	addr net.Addr      // where to listen again; nil: l cannot be reopened
	wake chan struct{} // 1-buffered: ResumeAccepting set a new l
}

// track registers s with its first listener; false after Shutdown. A Serve
// started while accepting is stopped waits for ResumeAccepting.
func (p *Proxy) track(s *serving, l net.Listener) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing {
		return false
	}
	p.serves[s] = struct{}{}
	if p.stopped {
		l.Close()
		p.forgetLocked(l)
		return true
	}
	s.l = l
	return true
}

// untrack ends s. Its listener is closed already, unless a ResumeAccepting
// set a new one as Serve was returning.
func (p *Proxy) untrack(s *serving) {
	p.mu.Lock()
	delete(p.serves, s)
	if s.l != nil {
		s.l.Close()
		p.forgetLocked(s.l)
	}
	p.mu.Unlock()
}

func (p *Proxy) forget(l net.Listener) {
	p.mu.Lock()
	p.forgetLocked(l)
	p.mu.Unlock()
}

func (p *Proxy) forgetLocked(l net.Listener) { delete(p.inherit, l) }

// nextListener returns the listener s accepts on and the channel that
// closes when the proxy closes it, waiting while accepting is stopped.
func (p *Proxy) nextListener(s *serving) (net.Listener, <-chan struct{}, error) {
	for {
		p.mu.Lock()
		l, stop, closing := s.l, p.stopCh, p.closing
		p.mu.Unlock()
		switch {
		case closing:
			return nil, nil, ErrServerClosed
		case l != nil:
			return l, stop, nil
		case s.addr == nil:
			return nil, nil, ErrServerClosed
		}
		select {
		case <-s.wake:
		case <-p.closeCh:
		}
	}
}

// StopAccepting closes the listeners without touching open connections:
// the first step of draining this replica. Serve waits until
// ResumeAccepting or Shutdown.
func (p *Proxy) StopAccepting() {
	p.init()
	p.mu.Lock()
	p.stopLocked()
	p.mu.Unlock()
}

func (p *Proxy) stopLocked() {
	if p.stopped {
		return
	}
	p.stopped = true
	close(p.stopCh)
	for s := range p.serves {
		if s.l != nil {
			s.l.Close()
			s.l = nil
		}
	}
}

// ResumeAccepting undoes StopAccepting: each waiting Serve accepts again on
// a new listener on its old address. If an address cannot be listened on
// again, accepting stays stopped and the error says which. After Shutdown
// it returns ErrServerClosed.
func (p *Proxy) ResumeAccepting(ctx context.Context) error {
	p.init()
	p.resumeMu.Lock()
	defer p.resumeMu.Unlock()
	p.mu.Lock()
	closing, stopped := p.closing, p.stopped
	var todo []*serving
	for s := range p.serves {
		if s.l == nil && s.addr != nil {
			todo = append(todo, s)
		}
	}
	p.mu.Unlock()
	switch {
	case closing:
		return ErrServerClosed
	case !stopped:
		return nil
	}
	opened := make(map[*serving]net.Listener, len(todo))
	closeOpened := func() { // p.mu held
		for _, l := range opened {
			l.Close()
			p.forgetLocked(l)
		}
	}
	var err error
	for _, s := range todo {
		var l net.Listener
		if l, err = p.Listen(ctx, s.addr.Network(), s.addr.String()); err != nil {
			err = fmt.Errorf("listen again on %s: %w", s.addr, err)
			break
		}
		opened[s] = l
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case err != nil:
		closeOpened()
		return err
	case p.closing: // Shutdown came meanwhile
		closeOpened()
		return ErrServerClosed
	}
	p.stopped = false
	p.stopCh = make(chan struct{})
	for s, l := range opened {
		if _, ok := p.serves[s]; !ok { // that Serve ended meanwhile
			l.Close()
			p.forgetLocked(l)
			continue
		}
		s.l = l
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
	return nil
}

// Draining reports whether accepting is stopped (StopAccepting, Shutdown).
func (p *Proxy) Draining() bool {
	p.init()
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stopped
}
