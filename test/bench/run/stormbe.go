package main

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/devgate/devgate/pkg/demo"
	"github.com/devgate/devgate/pkg/frame"
)

// The storm's backends run in this process (pkg/demo, as `devgate backend`
// runs it), so that every accept and login is timestamped exactly where it
// lands, and a restart is instant: one accept loop owns the listening
// socket and hands connections to the current demo backend; a restart
// starts a new demo backend, hands it the next connections, then closes the
// old one with all its connections. Every proxy then sees its backend
// connections closed and closes the devices, which log in again at once,
// to a backend that is already serving.
const (
	stormBackendBase = 19111 // storm backends on 19111..
	// stormBackendMaxConns is each backend's capacity in connections: its
	// share of the devices (a third) plus room for the hash's imbalance.
	stormBackendMaxConns = 4000
)

// stormBackend is one demo backend that can restart in place.
type stormBackend struct {
	id string
	ln net.Listener

	mu      sync.Mutex
	cur     *demo.Backend
	feed    *chanListener // cur's connections
	logins  []time.Time   // since the last take
	accepts []time.Time
}

// startStormBackends starts n backends on ports base, base+1, ...; with
// base 0 the system picks them (tests).
func startStormBackends(n, base int) ([]*stormBackend, error) {
	var bs []*stormBackend
	for i := range n {
		port := 0
		if base > 0 {
			port = base + i
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			stopStormBackends(bs)
			return nil, err
		}
		s := &stormBackend{id: fmt.Sprintf("storm-%d", i+1), ln: ln}
		if err := s.restart(); err != nil {
			ln.Close()
			stopStormBackends(bs)
			return nil, err
		}
		go s.acceptLoop()
		bs = append(bs, s)
	}
	return bs, nil
}

func stopStormBackends(bs []*stormBackend) {
	for _, s := range bs {
		s.ln.Close()
		s.mu.Lock()
		cur := s.cur
		s.mu.Unlock()
		cur.Close()
	}
}

func (s *stormBackend) addr() string { return s.ln.Addr().String() }

// acceptLoop hands every connection to the current demo backend.
func (s *stormBackend) acceptLoop() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(5 * time.Millisecond) // out of files and the like
			continue
		}
		now := time.Now()
		s.mu.Lock()
		s.accepts = append(s.accepts, now)
		feed := s.feed
		s.mu.Unlock()
		if !feed.give(c) {
			c.Close()
		}
	}
}

// restart starts a new demo backend, makes it take the next connections
// and closes the old one with every connection it holds.
func (s *stormBackend) restart() error {
	key, err := frame.NewJSONField("devid", frame.DefaultConfig().HeaderLength)
	if err != nil {
		return err
	}
	b := &demo.Backend{ID: s.id, Key: stampKey{key, s.stamp}, MaxConns: stormBackendMaxConns}
	feed := &chanListener{addr: s.ln.Addr(), ch: make(chan net.Conn, 1024), done: make(chan struct{})}
	go b.Serve(feed)
	s.mu.Lock()
	old := s.cur
	s.cur, s.feed = b, feed
	s.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return nil
}

func (s *stormBackend) stamp() {
	now := time.Now()
	s.mu.Lock()
	s.logins = append(s.logins, now)
	s.mu.Unlock()
}

// take returns the logins and accepts since the last call and starts anew.
func (s *stormBackend) take() (logins, accepts []time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	logins, accepts = s.logins, s.accepts
	s.logins, s.accepts = nil, nil
	return logins, accepts
}

// stampKey is the demo backend's key extractor, calling stamp for every
// frame that carries a device id: a login (the demo backend's Logins).
type stampKey struct {
	frame.Extractor
	stamp func()
}

func (k stampKey) Extract(f []byte) ([]byte, error) {
	key, err := k.Extractor.Extract(f)
	if err == nil {
		k.stamp()
	}
	return key, err
}

// chanListener is a net.Listener fed connections by acceptLoop.
type chanListener struct {
	addr net.Addr
	ch   chan net.Conn
	once sync.Once
	done chan struct{}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// give hands c to the backend; false once the backend closed.
func (l *chanListener) give(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

// peakIn is the most timestamps within any window of length w (ts sorted).
func peakIn(ts []time.Time, w time.Duration) int {
	peak, j := 0, 0
	for i := range ts {
		for ts[i].Sub(ts[j]) >= w {
			j++
		}
		peak = max(peak, i-j+1)
	}
	return peak
}

func sortTimes(ts []time.Time) { slices.SortFunc(ts, func(a, b time.Time) int { return a.Compare(b) }) }

// bins counts ts in windows of w from t0.
func bins(ts []time.Time, t0 time.Time, w time.Duration) []int {
	var b []int
	for _, t := range ts {
		i := max(0, int(t.Sub(t0)/w))
		for len(b) <= i {
			b = append(b, 0)
		}
		b[i]++
	}
	return b
}
