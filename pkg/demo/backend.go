package demo

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/devgate/devgate/pkg/frame"
)

// Backend is a demo message server: it answers every frame with a frame of
// the same type. Options are fields; set them before the first Serve.
type Backend struct {
	// ID names the backend in login replies. It should be unique.
	ID string

	// Frame is the framing. If zero, frame.DefaultConfig().
	Frame frame.Config

	// Key finds the device id in a frame. If nil, the JSON member "devid"
	// of the body.
	Key frame.Extractor

	// Logger receives connection-level events only. If nil, nothing is logged.
	Logger *zap.Logger

	// MaxConns caps open connections; more are accepted and closed at once.
	// If zero, 10000. If negative, no limit.
	MaxConns int

	// IdleTimeout closes a connection that sends nothing (or reads nothing
	// we write) for this long. If zero, 5 minutes. If negative, never.
	IdleTimeout time.Duration

	initOnce sync.Once
	initErr  error
	cfg      frame.Config
	key      frame.Extractor
	seq      frame.Extractor // the JSON member "seq" of a heartbeat
	log      *zap.Logger
	prefix   []byte // `{"backend":"<ID>","devid":"`

	mu        sync.Mutex
	closed    bool
	done      chan struct{} // closed by Close; made by init
	listeners map[net.Listener]struct{}
	conns     map[net.Conn]struct{}
	wg        sync.WaitGroup // Serve loops and connection handlers

	accepted, rejected, frames, logins, seqs, badFrames atomic.Uint64
}

// Stats are counters since the Backend was made.
type Stats struct {
	Accepted  uint64 // connections taken on
	Rejected  uint64 // connections closed at once because MaxConns were open
	Active    int    // connections open now
	Frames    uint64 // frames answered
	Logins    uint64 // frames answered with the backend id (the key was found)
	Seqs      uint64 // frames without a key answered with their "seq" (numbered heartbeats)
	BadFrames uint64 // connections closed for a bad or oversized frame
}

// Stats returns the current counters.
func (b *Backend) Stats() Stats {
	b.mu.Lock()
	active := len(b.conns)
	b.mu.Unlock()
	return Stats{
		Accepted:  b.accepted.Load(),
		Rejected:  b.rejected.Load(),
		Active:    active,
		Frames:    b.frames.Load(),
		Logins:    b.logins.Load(),
		Seqs:      b.seqs.Load(),
		BadFrames: b.badFrames.Load(),
	}
}

// init resolves the options once, however many listeners are served.
func (b *Backend) init() error {
	b.initOnce.Do(func() {
		b.mu.Lock()
		b.done = make(chan struct{})
		b.listeners = map[net.Listener]struct{}{}
		b.conns = map[net.Conn]struct{}{}
		b.mu.Unlock()

		b.cfg = b.Frame
		if b.cfg == (frame.Config{}) {
			b.cfg = frame.DefaultConfig()
		}
		if err := b.cfg.Validate(); err != nil {
			b.initErr = fmt.Errorf("demo backend %q: %w", b.ID, err)
			return
		}
		b.key = b.Key
		if b.key == nil {
			b.key, b.initErr = frame.NewJSONField("devid", b.cfg.HeaderLength)
			if b.initErr != nil {
				return
			}
		}
		if b.seq, b.initErr = frame.NewJSONField("seq", b.cfg.HeaderLength); b.initErr != nil {
			return
		}
		b.log = b.Logger
		if b.log == nil {
			b.log = zap.NewNop()
		}
		b.log = b.log.With(zap.String("backend", b.ID))
		id, _ := json.Marshal(b.ID) // a string always marshals
		b.prefix = fmt.Appendf(nil, `{"backend":%s,"devid":"`, id)
	})
	return b.initErr
}

func (b *Backend) maxConns() int {
	if b.MaxConns == 0 {
		return 10000
	}
	return b.MaxConns
}

func (b *Backend) idleTimeout() time.Duration {
	if b.IdleTimeout == 0 {
		return 5 * time.Minute
	}
	return b.IdleTimeout
}

// Serve accepts connections on l until Close, which makes it return nil.
// Serve after Close closes l and returns nil. Serve may be called for
// several listeners at once.
func (b *Backend) Serve(l net.Listener) error {
	if err := b.init(); err != nil {
		l.Close()
		return err
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		l.Close()
		return nil
	}
	b.listeners[l] = struct{}{}
	b.wg.Add(1)
	b.mu.Unlock()
	defer b.wg.Done()
	defer func() {
		b.mu.Lock()
		delete(b.listeners, l)
		b.mu.Unlock()
		l.Close()
	}()

	b.log.Info("demo backend serving", zap.Stringer("addr", l.Addr()))
	var backoff time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if b.isClosed() {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// Out of descriptors and the like: wait rather than spin, as
			// net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			b.log.Warn("accept failed", zap.Error(err), zap.Duration("retry_in", backoff))
			select {
			case <-b.done:
				return nil
			case <-time.After(backoff):
			}
			continue
		}
		backoff = 0
		b.track(c)
	}
}

func (b *Backend) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

// track registers c and starts its handler, or closes it when the Backend is
// closed or full.
func (b *Backend) track(c net.Conn) {
	b.mu.Lock()
	switch {
	case b.closed:
		b.mu.Unlock()
		c.Close()
		return
	case b.maxConns() > 0 && len(b.conns) >= b.maxConns():
		b.mu.Unlock()
		b.rejected.Add(1)
		b.log.Debug("connection rejected: max conns", zap.Stringer("remote", c.RemoteAddr()))
		c.Close()
		return
	}
	b.conns[c] = struct{}{}
	b.wg.Add(1)
	b.mu.Unlock()
	b.accepted.Add(1)
	go b.handle(c)
}

// Close stops every Serve, closes all connections and waits for their
// goroutines. It returns the first error from closing a listener.
func (b *Backend) Close() error {
	b.init() // makes the maps and done even if Serve never ran
	b.mu.Lock()
	var err error
	if !b.closed {
		b.closed = true
		close(b.done)
		for l := range b.listeners {
			if e := l.Close(); e != nil && !errors.Is(e, net.ErrClosed) && err == nil {
				err = e
			}
		}
		for c := range b.conns {
			c.Close()
		}
	}
	b.mu.Unlock()
	b.wg.Wait()
	return err
}
