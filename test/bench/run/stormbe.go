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
// runs it), so that every login is timestamped exactly where it lands and a
// restart is instant: the demo backend closes every connection and a new
// one serves the same listening socket, whose backlog keeps the dials that
// arrive meanwhile. Every proxy then sees its backend connections closed
// and closes the devices, which log in again at once.
const (
	stormBackendBase = 19111 // storm backends on 19111..
	// stormBackendMaxConns is each backend's capacity in connections: its
	// share of the devices (a third) plus room for the hash's imbalance.
	stormBackendMaxConns = 4000
)

// stormBackend is one demo backend that can restart in place.
type stormBackend struct {
	id   string
	ln   *net.TCPListener
	keep keepListener // ln, whose Close ends Accept but keeps the socket

	mu     sync.Mutex
	cur    *demo.Backend
	logins []time.Time // since the last reset
}

func startStormBackends() ([]*stormBackend, error) {
	var bs []*stormBackend
	for i := range numBackends {
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", stormBackendBase+i))
		if err != nil {
			stopStormBackends(bs)
			return nil, err
		}
		s := &stormBackend{id: fmt.Sprintf("storm-%d", i+1), ln: ln.(*net.TCPListener)}
		s.keep = keepListener{s.ln}
		if err := s.serve(); err != nil {
			stopStormBackends(bs)
			return nil, err
		}
		bs = append(bs, s)
	}
	return bs, nil
}

func stopStormBackends(bs []*stormBackend) {
	for _, s := range bs {
		s.mu.Lock()
		cur := s.cur
		s.mu.Unlock()
		cur.Close()
		s.ln.Close()
	}
}

func (s *stormBackend) addr() string { return s.ln.Addr().String() }

// serve starts a new demo backend on the listener.
func (s *stormBackend) serve() error {
	key, err := frame.NewJSONField("devid", frame.DefaultConfig().HeaderLength)
	if err != nil {
		return err
	}
	b := &demo.Backend{ID: s.id, Key: stampKey{key, s.stamp}, MaxConns: stormBackendMaxConns}
	if err := s.ln.SetDeadline(time.Time{}); err != nil {
		return err
	}
	s.mu.Lock()
	s.cur = b
	s.mu.Unlock()
	go b.Serve(s.keep)
	return nil
}

// restart closes every connection and serves the socket again.
func (s *stormBackend) restart() error {
	s.mu.Lock()
	old := s.cur
	s.mu.Unlock()
	old.Close()
	return s.serve()
}

func (s *stormBackend) stamp() {
	now := time.Now()
	s.mu.Lock()
	s.logins = append(s.logins, now)
	s.mu.Unlock()
}

// takeLogins returns the logins since the last call and starts anew.
func (s *stormBackend) takeLogins() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.logins
	s.logins = nil
	return l
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

// keepListener's Close ends a pending Accept (a past deadline) and keeps
// the socket listening for the next demo backend.
type keepListener struct{ *net.TCPListener }

func (l keepListener) Close() error {
	err := l.TCPListener.SetDeadline(time.Unix(1, 0))
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

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
