package testkit

import (
	"net"
	"sync"
	"time"
)

// AcceptLog is a listener that records when it accepted each connection:
// a backend's login rate, measured at the backend.
type AcceptLog struct {
	net.Listener
	mu    sync.Mutex
	times []time.Time
}

// Accept records the time of each connection it returns.
func (l *AcceptLog) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.mu.Lock()
		l.times = append(l.times, time.Now())
		l.mu.Unlock()
	}
	return c, err
}

// Times returns the accept times so far, oldest first.
func (l *AcceptLog) Times() []time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]time.Time(nil), l.times...)
}

// Since returns the accept times at or after t.
func (l *AcceptLog) Since(t time.Time) []time.Time {
	var out []time.Time
	for _, at := range l.Times() {
		if !at.Before(t) {
			out = append(out, at)
		}
	}
	return out
}

// PerWindow counts ts in consecutive windows of w from start.
func PerWindow(ts []time.Time, start time.Time, w time.Duration) []int {
	var out []int
	for _, t := range ts {
		i := int(t.Sub(start) / w)
		if i < 0 {
			continue
		}
		for len(out) <= i {
			out = append(out, 0)
		}
		out[i]++
	}
	return out
}

// Rate is len(ts)-1 over the time from the first to the last, per second
// (0 for fewer than two).
func Rate(ts []time.Time) float64 {
	if len(ts) < 2 {
		return 0
	}
	d := ts[len(ts)-1].Sub(ts[0]).Seconds()
	if d <= 0 {
		return 0
	}
	return float64(len(ts)-1) / d
}
