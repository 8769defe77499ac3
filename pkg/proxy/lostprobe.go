package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"go.uber.org/zap"
)

// The check of a lost backend (rehome.go): when a backend's connection
// ends, is the backend gone (move its devices) or alive (the close was on
// purpose)?

// lostProbes checks whether a backend whose connection ended is gone: one
// dial per backend at a time, its answer shared by every connection that
// asks within lostProbeFresh.
type lostProbes struct {
	mu sync.Mutex
	m  map[string]*lostProbe
}

type lostProbe struct {
	running bool
	gone    bool
	at      time.Time // of the last answer
	waiters []func(gone bool)
}

// lostProbeFresh is how long a check's answer stands for the next asker.
const lostProbeFresh = time.Second

// check calls done (maybe on another goroutine) with whether c's backend
// is gone: out of the ring, or a dial to it fails.
func (ps *lostProbes) check(p *Proxy, c *conn, done func(gone bool)) {
	id := p.table.backendOf(c)
	addr := ""
	if r := p.Source.Ring(); r != nil {
		for _, b := range r.Backends() {
			if b.ID == id {
				addr = b.Addr
				break
			}
		}
	}
	if addr == "" {
		done(true)
		return
	}
	now := time.Now()
	ps.mu.Lock()
	if ps.m == nil {
		ps.m = make(map[string]*lostProbe)
	}
	pb := ps.m[id]
	if pb == nil {
		if len(ps.m) >= 64 { // forget old answers, so ids that come and go do not pile up
			for k, v := range ps.m {
				if !v.running && now.Sub(v.at) > time.Minute {
					delete(ps.m, k)
				}
			}
		}
		pb = &lostProbe{}
		ps.m[id] = pb
	}
	if !pb.running && !pb.at.IsZero() && now.Sub(pb.at) < lostProbeFresh {
		gone := pb.gone
		ps.mu.Unlock()
		done(gone)
		return
	}
	pb.waiters = append(pb.waiters, done)
	if pb.running {
		ps.mu.Unlock()
		return
	}
	pb.running = true
	ps.mu.Unlock()
	p.wg.Add(1) // Shutdown waits for it, so the loops outlive its answer
	go func() {
		defer p.wg.Done()
		err := p.probeBackend(addr)
		ps.mu.Lock()
		ws := pb.waiters
		pb.running, pb.gone, pb.at, pb.waiters = false, err != nil, time.Now(), nil
		ps.mu.Unlock()
		if err != nil {
			p.log.Warn("backend lost: moving its devices to their next owners", zap.String("backend", id),
				zap.String("addr", addr), zap.Int("waiting", len(ws)), zap.Error(err))
		}
		for _, w := range ws {
			w(err != nil)
		}
	}()
}

// lostProbeSettle is how long a check's connection must stay open for the
// backend to count as alive. A process being killed closes its
// connections before its listener: a dial in that moment still succeeds,
// and the backlog's connection is reset a moment later.
const lostProbeSettle = 250 * time.Millisecond

// probeBackend says whether the backend at addr is reachable: a TCP
// connection (with Dial when one is set; no TLS handshake) that is neither
// refused nor reset within lostProbeSettle. Backends wait for the device to
// speak first, so a live one sends nothing.
func (p *Proxy) probeBackend(addr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), p.dialTimeout())
	defer cancel()
	var bc net.Conn
	var err error
	if p.Dial != nil {
		bc, err = p.Dial(ctx, "tcp", addr)
	} else {
		var d net.Dialer
		bc, err = d.DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		return err
	}
	defer bc.Close()
	bc.SetReadDeadline(time.Now().Add(lostProbeSettle))
	if _, err := bc.Read(make([]byte, 1)); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("connection ended at once: %w", err)
	}
	return nil
}
