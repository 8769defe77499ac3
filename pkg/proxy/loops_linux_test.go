package proxy

import "github.com/devgate/devgate/pkg/proxy/internal/netpoll"

// evConns is the number of proxied connections on event loops (for tests).
func (p *Proxy) evConns() int {
	p.loops.mu.Lock()
	defer p.loops.mu.Unlock()
	n := 0
	for _, l := range p.loops.loops {
		n += int(l.routed.Load())
	}
	return n
}

// evLoopFDs is the number of fds the loops hold themselves (for tests).
func (p *Proxy) evLoopFDs() int {
	p.loops.mu.Lock()
	defer p.loops.mu.Unlock()
	return netpoll.FDs * len(p.loops.loops) // epoll and a wake pipe
}
