package registry

import (
	"net"
	"sync"
	"testing"
)

// pauseProxy forwards TCP to target and can stop forwarding without closing
// anything: a blackhole as a partition makes it, no FIN, no RST. Bytes sent
// during the pause wait in the socket buffers and flow on resume, as after a
// partition heals.
type pauseProxy struct {
	addr, target string
	l            net.Listener
	mu           sync.Mutex
	cond         *sync.Cond
	paused       bool
	closed       bool
	conns        []net.Conn
	wg           sync.WaitGroup
}

func newPauseProxy(t *testing.T, target string) *pauseProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &pauseProxy{addr: l.Addr().String(), target: target, l: l}
	p.cond = sync.NewCond(&p.mu)
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *pauseProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		b, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.Close()
			b.Close()
			return
		}
		p.conns = append(p.conns, c, b)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(b, c)
		go p.pipe(c, b)
	}
}

// pipe copies src to dst, waiting while the proxy is paused.
func (p *pauseProxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	defer dst.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			for p.paused && !p.closed {
				p.cond.Wait()
			}
			closed := p.closed
			p.mu.Unlock()
			if closed {
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

func (p *pauseProxy) pause() { p.set(true) }

func (p *pauseProxy) resume() { p.set(false) }

func (p *pauseProxy) set(paused bool) {
	p.mu.Lock()
	p.paused = paused
	p.cond.Broadcast()
	p.mu.Unlock()
}

func (p *pauseProxy) close() {
	p.l.Close()
	p.mu.Lock()
	p.closed = true
	p.cond.Broadcast()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}
