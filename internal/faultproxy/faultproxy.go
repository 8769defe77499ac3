// Package faultproxy is a TCP proxy for tests that makes the faults a
// network makes between a client and a server on loopback:
//
//	p := faultproxy.Start(t, etcd.Addr())  // clients dial p.Addr()
//	p.Pause()                               // blackhole: nothing moves, nothing closes
//	p.Resume()                              // the partition heals; held bytes flow on
//	p.Cut()                                 // every connection closed, the port refused
//	p.Restore(t)                            // the port accepts again
//
// It is closed by t's cleanup.
package faultproxy

import (
	"net"
	"sync"
	"testing"
)

// Proxy forwards every connection accepted on Addr to its target.
type Proxy struct {
	addr, target string

	mu     sync.Mutex
	cond   *sync.Cond
	l      net.Listener // nil while cut
	paused bool
	closed bool
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

// Start listens on a free loopback port and forwards to target until t
// ends.
func Start(t testing.TB, target string) *Proxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{addr: l.Addr().String(), target: target, conns: map[net.Conn]struct{}{}}
	p.cond = sync.NewCond(&p.mu)
	p.serve(l)
	t.Cleanup(p.Close)
	return p
}

// Addr is the address clients dial instead of the target.
func (p *Proxy) Addr() string { return p.addr }

// Pause stops forwarding without closing anything, as a partition does: no
// FIN, no RST. Bytes sent meanwhile wait in the socket buffers.
func (p *Proxy) Pause() { p.setPaused(true) }

// Resume forwards again, held bytes first.
func (p *Proxy) Resume() { p.setPaused(false) }

// Cut closes every forwarded connection and stops listening, so new
// connections are refused until Restore.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cutLocked()
}

// Restore listens again on the same address.
func (p *Proxy) Restore(t testing.TB) {
	t.Helper()
	l, err := net.Listen("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	p.serve(l)
}

// Close cuts and waits for every goroutine of the proxy.
func (p *Proxy) Close() {
	p.mu.Lock()
	p.closed = true
	p.cutLocked()
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *Proxy) cutLocked() {
	if p.l != nil {
		p.l.Close()
		p.l = nil
	}
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
	p.cond.Broadcast() // paused pipes of cut connections end
}

func (p *Proxy) setPaused(paused bool) {
	p.mu.Lock()
	p.paused = paused
	p.cond.Broadcast()
	p.mu.Unlock()
}

func (p *Proxy) serve(l net.Listener) {
	p.mu.Lock()
	p.l = l
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			b, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			if p.closed || p.l != l {
				p.mu.Unlock()
				c.Close()
				b.Close()
				return
			}
			p.conns[c], p.conns[b] = struct{}{}, struct{}{}
			p.mu.Unlock()
			p.wg.Add(2)
			go p.pipe(b, c)
			go p.pipe(c, b)
		}
	}()
}

// pipe copies src to dst, holding each chunk while the proxy is paused.
func (p *Proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	defer dst.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			_, live := p.conns[src]
			for p.paused && live {
				p.cond.Wait()
				_, live = p.conns[src]
			}
			p.mu.Unlock()
			if !live {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
