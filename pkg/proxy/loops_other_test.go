//go:build !linux

package proxy

func (p *Proxy) evConns() int { return 0 }

func (p *Proxy) evLoopFDs() int { return 0 }
