package admin

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/devgate/devgate/pkg/proxy"
)

// Defaults of History: one sample every 10 s for the last hour.
const (
	DefaultHistoryInterval = 10 * time.Second
	DefaultHistorySize     = 360
	// maxHistoryBackends bounds the backends one sample names; the
	// connections of the rest are summed under HistoryOther.
	maxHistoryBackends = 64
)

// HistoryOther names the connections of the backends past maxHistoryBackends.
const HistoryOther = "(other)"

// HistoryMethod is the name of the JSON API call that returns the samples
// (not a gRPC method; it needs the read role).
const HistoryMethod = "History"

// WhoamiMethod is the JSON API call that returns the caller's role.
const WhoamiMethod = "Whoami"

// HistorySample is one point of a replica's history.
type HistorySample struct {
	At               time.Time        `json:"at"`
	Connections      map[string]int64 `json:"connections"` // backend id -> proxied connections
	AcceptsPerSecond float64          `json:"acceptsPerSecond"`
	ClosesPerSecond  float64          `json:"closesPerSecond"`
}

// HistoryReply is the JSON API's answer to History.
type HistoryReply struct {
	Gateway  string          `json:"gateway"`
	Interval string          `json:"interval"`
	Samples  []HistorySample `json:"samples"` // oldest first
}

// History samples one replica's connections per backend and its accepts
// and closes per second into a ring of fixed size: memory stays bounded
// (Size samples of at most maxHistoryBackends backends each).
type History struct {
	Interval time.Duration // if zero, DefaultHistoryInterval
	Size     int           // samples kept; if zero, DefaultHistorySize

	mu       sync.Mutex
	buf      []HistorySample
	next     int
	full     bool
	last     time.Time
	accepted uint64
	closed   uint64
}

func (h *History) interval() time.Duration {
	if h.Interval > 0 {
		return h.Interval
	}
	return DefaultHistoryInterval
}

// Run samples p every Interval until ctx is done.
func (h *History) Run(ctx context.Context, p *proxy.Proxy) {
	t := time.NewTicker(h.interval())
	defer t.Stop()
	for {
		st := p.Stats()
		h.Record(time.Now(), st.Accepted, sumClosed(st.Closed), p.Conns())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func sumClosed(m map[proxy.Reason]uint64) uint64 {
	var n uint64
	for _, v := range m {
		n += v
	}
	return n
}

// Record adds a sample from the counters' totals at now: the rates are
// the change since the previous Record (zero on the first).
func (h *History) Record(now time.Time, accepted, closed uint64, conns map[string]int) {
	s := HistorySample{At: now.UTC().Truncate(time.Millisecond), Connections: boundConns(conns)}
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.last.IsZero() {
		if d := now.Sub(h.last).Seconds(); d > 0 {
			s.AcceptsPerSecond = float64(accepted-min(accepted, h.accepted)) / d
			s.ClosesPerSecond = float64(closed-min(closed, h.closed)) / d
		}
	}
	h.last, h.accepted, h.closed = now, accepted, closed
	size := h.Size
	if size <= 0 {
		size = DefaultHistorySize
	}
	if h.buf == nil {
		h.buf = make([]HistorySample, size)
	}
	h.buf[h.next] = s
	h.next = (h.next + 1) % len(h.buf)
	if h.next == 0 {
		h.full = true
	}
}

// boundConns copies conns, keeping the maxHistoryBackends largest.
func boundConns(conns map[string]int) map[string]int64 {
	out := make(map[string]int64, min(len(conns), maxHistoryBackends+1))
	if len(conns) <= maxHistoryBackends {
		for id, n := range conns {
			out[id] = int64(n)
		}
		return out
	}
	ids := make([]string, 0, len(conns))
	for id := range conns {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool {
		if conns[ids[i]] != conns[ids[j]] {
			return conns[ids[i]] > conns[ids[j]]
		}
		return ids[i] < ids[j]
	})
	for i, id := range ids {
		if i < maxHistoryBackends {
			out[id] = int64(conns[id])
		} else {
			out[HistoryOther] += int64(conns[id])
		}
	}
	return out
}

// Samples returns the samples kept, oldest first.
func (h *History) Samples() []HistorySample {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.full {
		return append([]HistorySample(nil), h.buf[:h.next]...)
	}
	return append(append([]HistorySample(nil), h.buf[h.next:]...), h.buf[:h.next]...)
}
