//go:build linux

package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/devgate/devgate/pkg/frame"
	"github.com/devgate/devgate/pkg/proxy/internal/netpoll"
	"github.com/devgate/devgate/pkg/ring"
)

// The steps before copying, on the loop (evLoopAdmits): a client accepted
// by a loop (loop_accept_linux.go) or by Serve is on a loop from the start;
// the loop reads its key frame, dials the owner with a non-blocking
// connect on a raw socket, falls back to the next owners, and then copies.
// No goroutine, no netpoller registration of the backend socket and no
// address lookups: a churning connection costs about half the system calls
// of the goroutine path (accept, preread and dial with net.Dialer).
// Deadlines are two FIFO queues per loop, as every preread (and every
// dial) has the same timeout.

// evPre is a pair's state before evCopy.
type evPre struct {
	c      *net.TCPConn   // nil when the loop accepted the socket itself
	remote netip.AddrPort // the client's address
	bp     *[]byte
	buf    []byte // every byte read from the client
	start  time.Time
	gen    uint32 // bumped by each dial: older deadlines and dial results are stale
	device string
	ring   ring.Ring
	owners []int
	stack  [8]int
	try    int          // owners dialled so far
	again  bool         // routed once, then fell back (loop_copy_linux.go)
	moved  bool         // and counted the device as moved then
	prior  priorEntry   // the device cache's entry before routing: a fallback restores it
	sent   time.Time    // when the preread bytes went to the backend
	b      ring.Backend // the owner being dialled

	// Pacing (loop_pace_linux.go).
	wait      *waiter   // in the queue of paced: waiting for a turn
	paced     *pacer    // whose token the dial holds (given back if it fails)
	waitUntil time.Time // MaxWait from the first wait; zero before
	turn      bool      // the token for a.b came: dial
}

// loopPreread reads what the client sent and routes it once the key is in.
func (l *evLoop) loopPreread(pr *evPair, events uint32) {
	a, p := pr.adm, l.p
	limit := p.Matcher.PrereadLimit()
	a.buf = growPreread(a.buf, limit)
	n, err := syscall.Read(pr.side[0].Fd, a.buf[len(a.buf):min(cap(a.buf), limit)])
	switch {
	case err == syscall.EAGAIN || err == syscall.EINTR:
		return
	case err != nil:
		l.loopPrereadFailed(pr, err)
		return
	case n == 0:
		l.loopPrereadFailed(pr, io.EOF)
		return
	}
	a.buf = a.buf[:len(a.buf)+n]
	if err := unexpectedProxyHeader(a.buf); err != nil { // loops admit only without trusted balancers
		l.loopPrereadFailed(pr, err)
		return
	}
	key, ferr := p.Matcher.Find(a.buf)
	switch {
	case ferr == nil:
		l.loopRoute(pr, key)
	case !errors.Is(ferr, frame.ErrShort):
		l.loopPrereadFailed(pr, ferr)
	case len(a.buf) >= limit:
		l.loopPrereadFailed(pr, frame.ErrPrereadCap)
	}
}

// loopRoute looks the key up and dials its first owner.
func (l *evLoop) loopRoute(pr *evPair, key []byte) {
	a, p := pr.adm, l.p
	if p.OnPreread != nil {
		p.OnPreread(time.Since(a.start))
	}
	a.device = string(key) // key aliases buf, which goes back to the pool
	if l.loopHold(pr) {    // a flapping device (flap_linux.go)
		return
	}
	l.loopLookup(pr, key)
}

// loopLookup routes key on the ring and dials its first owner.
func (l *evLoop) loopLookup(pr *evPair, key []byte) {
	a, p := pr.adm, l.p
	a.ring = p.Source.Ring()
	if a.ring == nil || a.ring.Len() == 0 {
		l.loopClose(pr, ReasonNoBackends, nil)
		return
	}
	a.owners = a.ring.Owners(key, p.maxTries(), a.stack[:0])
	l.loopDial(pr)
}

// loopDial dials the next owner: a raw non-blocking connect the loop waits
// for, or for a host name a goroutine with net.Dialer.
func (l *evLoop) loopDial(pr *evPair) {
	a, p := pr.adm, l.p
	for a.try < len(a.owners) {
		a.b = a.ring.Backends()[a.owners[a.try]]
		// An ejected owner is skipped before its pace is asked for: the
		// pace of the owner dialled applies (not when a turn came: decided).
		if !a.turn && p.ejectSkip(a.b, a.try+1 == len(a.owners)) {
			a.try++
			continue
		}
		if l.loopWaitTurn(pr) {
			return
		}
		a.try++
		a.gen++
		pr.stage = evDial
		ap, err := netip.ParseAddrPort(a.b.Addr)
		if err != nil {
			l.loopDialAsync(pr)
			return
		}
		fd, err := netpoll.Connect(ap, keepAliveIdle(p.KeepAlive))
		if err != nil {
			l.loopCountDialFailure(pr, err)
			continue
		}
		s := &pr.side[1]
		*s = evSide{FD: netpoll.FD{Fd: fd}}
		l.mu.Lock()
		if err = l.poll.Add(pr, netpoll.Out, &s.FD); err == nil {
			l.timers[evDial].push(evTimer{at: time.Now().Add(l.timers[evDial].d), pr: pr, gen: a.gen})
		}
		l.mu.Unlock()
		if err != nil {
			syscall.Close(fd)
			s.Fd = -1
			l.loopCountDialFailure(pr, err)
			continue
		}
		return
	}
	l.loopClose(pr, ReasonDialFailed, nil)
}

// loopDialAsync dials a.b by name in a goroutine, which posts the result back.
// It counts as a connection for Shutdown, so the loops outlive it.
func (l *evLoop) loopDialAsync(pr *evPair) {
	p, b, gen := l.p, pr.adm.b, pr.adm.gen
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), p.dialTimeout())
		bc, err := p.dialer(ctx, "tcp", b.Addr)
		cancel()
		l.send(evMsg{pr: pr, dialled: true, gen: gen, bc: bc, err: err})
	}()
}

// loopDialled takes the result of dialAsync.
func (l *evLoop) loopDialled(m evMsg) {
	pr := m.pr
	if pr.done || pr.adm == nil || pr.adm.gen != m.gen {
		if m.bc != nil {
			m.bc.Close()
		}
		return
	}
	if m.err != nil {
		l.loopCountDialFailure(pr, m.err)
		l.loopDial(pr)
		return
	}
	tc, ok := m.bc.(*net.TCPConn)
	s := &pr.side[1]
	var err error
	if !ok {
		err = fmt.Errorf("dial returned %T", m.bc)
	} else {
		s.Fd, err = netpoll.RawFD(tc)
	}
	if err != nil {
		m.bc.Close()
		l.loopCountDialFailure(pr, err)
		l.loopDial(pr)
		return
	}
	s.tc = tc
	l.p.setKeepAlive(tc)
	l.poll.Adopt(&s.FD, pr)
	l.loopConnected(pr)
}

// loopConnectEvent handles readiness while side[1] connects.
func (l *evLoop) loopConnectEvent(pr *evPair, fd int, events uint32) {
	if fd == pr.side[0].Fd {
		if events&netpoll.Hup != 0 {
			l.loopClose(pr, ReasonClientGone, nil)
			return
		}
		// More bytes (or EOF) from the client: they wait in the socket
		// until the copy starts; stop the level-triggered wakeups.
		l.poll.Watch(&pr.side[0].FD, 0)
		return
	}
	if fd != pr.side[1].Fd {
		return
	}
	if err := netpoll.ConnectError(fd, events); err != nil {
		l.loopDialFailed(pr, err)
		return
	}
	l.loopConnected(pr)
}

// loopDialFailed closes the socket being dialled and tries the next owner.
func (l *evLoop) loopDialFailed(pr *evPair, err error) {
	l.loopDropSide(pr, 1)
	l.loopCountDialFailure(pr, err)
	l.loopDial(pr)
}

func (l *evLoop) loopCountDialFailure(pr *evPair, err error) {
	l.loopTurnUnused(pr)
	l.p.countDialFailure(pr.adm.b, pr.adm.try, err)
}

// loopConnected writes what the client sent (after a PROXY header when the
// backend wants one) and starts copying.
func (l *evLoop) loopConnected(pr *evPair) {
	a, p := pr.adm, l.p
	out := a.buf
	var hdr []byte
	if p.SendProxyV2 || a.b.Meta["proxy"] == "v2" {
		var err error
		if hdr, err = proxyV2Header(net.TCPAddrFromAddrPort(a.remote), l.loopLocalAddr(pr)); err != nil {
			l.loopClose(pr, ReasonBackendWrite, nil)
			return
		}
		out = append(hdr, a.buf...)
	}
	rest, err := netpoll.WriteSome(pr.side[1].Fd, out)
	if err != nil && isBackendGone(err) { // reset before its first byte: a failed dial
		l.loopDialFailed(pr, err)
		return
	}
	if err != nil {
		p.badLog.Warn("write to backend failed", zap.String("backend", a.b.ID), zap.Error(err))
		l.loopClose(pr, ReasonBackendWrite, nil)
		return
	}
	p.ejectSucceeded(a.b.ID, false)
	if len(rest) > 0 { // a fresh socket takes a key frame; keep the rest anyway
		bp := evPendingPool.Get().(*[]byte)
		pr.pbuf[0], pr.pending[0] = bp, append((*bp)[:0], rest...)
	}
	if !a.again { // replayed bytes are counted once
		p.stats.bytesIn.Add(uint64(len(a.buf)))
	}
	if a.try > 1 {
		p.stats.fallbacks.Add(1)
	}
	var client net.Conn
	if a.c != nil {
		client = a.c
	}
	pc := &conn{client: client, device: a.device, backendID: a.b.ID, since: time.Now(), ev: pr,
		finWait: p.finTimeouts(), moved: a.moved, lg: p.newLogin(a.buf, nil, a.remote),
		remote: packAddr(a.remote), tries: uint8(min(a.try, 255))}
	a.sent = time.Now()
	pr.pc, pr.stage, pr.adm, pr.replay = pc, evCopy, nil, a // a.buf kept until a byte moves
	l.routed.Add(1)
	if a.again {
		a.prior = p.trackRouted(pc)
	} else {
		a.prior = p.routedConn(pc)
	}
	l.loopRearm(pr)
}

// loopLocalAddr is the client socket's local address (for a PROXY header).
func (l *evLoop) loopLocalAddr(pr *evPair) net.Addr {
	if a := pr.adm; a.c != nil {
		return a.c.LocalAddr()
	}
	return net.TCPAddrFromAddrPort(netpoll.LocalAddr(pr.side[0].Fd))
}

// loopPrereadFailed refuses a pair whose key frame did not come: counted and
// logged as on the goroutine path (prereadReason).
func (l *evLoop) loopPrereadFailed(pr *evPair, err error) {
	if p := l.p; p.OnPreread != nil {
		p.OnPreread(time.Since(pr.adm.start))
	}
	l.loopClose(pr, "", err)
}

// loopDropSide takes side i out of the loop and closes it.
func (l *evLoop) loopDropSide(pr *evPair, i int) {
	s := &pr.side[i]
	if s.Fd < 0 {
		return
	}
	l.poll.Delete(&s.FD, pr, s.tc == nil) // a raw fd leaves epoll when closed
	s.close()
	*s = evSide{FD: netpoll.FD{Fd: -1}}
}
