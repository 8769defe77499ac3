//go:build linux

// Package netpoll is the epoll instance of one proxy event loop: the
// interest set, the table of which owner each fd belongs to, and a wake
// pipe. The poller keeps each fd's interest mask and its owner itself, so
// its user says what an fd should wait for (Watch) and never calls
// epoll_ctl. Modelled on gnet's internal/netpoll.
package netpoll

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"
)

// Events an FD can wait for.
const (
	In  = syscall.EPOLLIN
	Out = syscall.EPOLLOUT
	// Hup is what a peer going away raises whatever the mask.
	Hup = syscall.EPOLLERR | syscall.EPOLLHUP
)

// epollExclusive is EPOLLEXCLUSIVE (Linux 4.5), missing from package syscall.
const epollExclusive = 1 << 28

// listenerTag marks a listener's entries (the high half of the event data;
// the low half is the fd).
const listenerTag = 1

// Event is one readiness report of Wait.
type Event = syscall.EpollEvent

// FD is one socket in a poller: its user keeps it (one per socket) and the
// poller keeps Mask, the events it is in the epoll set for (0: not in it).
type FD struct {
	Fd   int
	Mask uint32
}

// Poller is one epoll set with its fd->owner table. The table is safe for
// any goroutine; Wait, Watch and the other changes of an FD already
// attached are the loop's.
type Poller[T comparable] struct {
	epfd int
	ep   *os.File // epfd in Go's netpoller: Wait parks there, not in epoll_wait
	rc   syscall.RawConn
	wake [2]int // a pipe: a byte wakes the loop
	to   time.Time

	// Wait's state: one closure made at Open, so a wait allocates nothing.
	waitFn  func(uintptr) bool
	waitBuf []Event
	waitN   int
	waitErr error

	mu     sync.Mutex
	owners map[int32]T
}

// Open makes a poller.
func Open[T comparable]() (*Poller[T], error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	if err := syscall.SetNonblock(epfd, true); err != nil {
		syscall.Close(epfd)
		return nil, fmt.Errorf("epoll nonblock: %w", err)
	}
	p := &Poller[T]{epfd: epfd, ep: os.NewFile(uintptr(epfd), "epoll"), owners: make(map[int32]T)}
	p.waitFn = func(uintptr) bool {
		p.waitN, p.waitErr = epollWait(p.epfd, p.waitBuf)
		return p.waitN != 0 || p.waitErr != nil
	}
	if p.rc, err = p.ep.SyscallConn(); err != nil {
		p.ep.Close()
		return nil, fmt.Errorf("epoll raw conn: %w", err)
	}
	if err := syscall.Pipe2(p.wake[:], syscall.O_NONBLOCK|syscall.O_CLOEXEC); err != nil {
		p.ep.Close()
		return nil, fmt.Errorf("pipe2: %w", err)
	}
	if err := p.ctl(syscall.EPOLL_CTL_ADD, p.wake[0], In, 0); err != nil {
		p.Close()
		return nil, fmt.Errorf("epoll_ctl: %w", err)
	}
	return p, nil
}

// Close closes the epoll set and the wake pipe.
func (p *Poller[T]) Close() {
	syscall.Close(p.wake[0])
	syscall.Close(p.wake[1])
	p.ep.Close()
}

// FDs is the number of descriptors a poller holds itself.
const FDs = 3

func (p *Poller[T]) ctl(op, fd int, events uint32, tag int32) error {
	ev := syscall.EpollEvent{Events: events, Fd: int32(fd), Pad: tag}
	if op == syscall.EPOLL_CTL_DEL {
		return syscall.EpollCtl(p.epfd, op, fd, nil)
	}
	return syscall.EpollCtl(p.epfd, op, fd, &ev)
}

// Add makes owner the owner of fs and puts them in the set for events, all
// or none: the loop sees no event of one before all are in.
func (p *Poller[T]) Add(owner T, events uint32, fs ...*FD) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, f := range fs {
		if err := p.ctl(syscall.EPOLL_CTL_ADD, f.Fd, events, 0); err != nil {
			for _, f := range fs[:i] {
				p.ctl(syscall.EPOLL_CTL_DEL, f.Fd, 0, 0)
				f.Mask = 0
				delete(p.owners, int32(f.Fd))
			}
			return err
		}
		f.Mask = events
		p.owners[int32(f.Fd)] = owner
	}
	return nil
}

// Adopt makes owner the owner of f without watching it yet.
func (p *Poller[T]) Adopt(f *FD, owner T) {
	p.mu.Lock()
	p.owners[int32(f.Fd)] = owner
	p.mu.Unlock()
}

// Watch brings f's entry in line with events (0: out of the set; an fd
// with nothing to watch leaves it, as level-triggered EPOLLHUP cannot be
// masked).
func (p *Poller[T]) Watch(f *FD, events uint32) error {
	if events == f.Mask {
		return nil
	}
	op := syscall.EPOLL_CTL_MOD
	switch {
	case events == 0:
		op = syscall.EPOLL_CTL_DEL
	case f.Mask == 0:
		op = syscall.EPOLL_CTL_ADD
	}
	err := p.ctl(op, f.Fd, events, 0)
	if err == nil || events == 0 { // a failed delete: it was not in the set
		f.Mask = events
	}
	return err
}

// Delete takes f out of the set and of the table (if owner still owns it).
// closing says the caller closes a raw fd next, which takes it out of the
// set anyway; a socket Go's netpoller also holds must leave explicitly.
func (p *Poller[T]) Delete(f *FD, owner T, closing bool) {
	if f.Mask != 0 && !closing {
		p.ctl(syscall.EPOLL_CTL_DEL, f.Fd, 0, 0)
	}
	f.Mask = 0
	p.mu.Lock()
	if p.owners[int32(f.Fd)] == owner {
		delete(p.owners, int32(f.Fd))
	}
	p.mu.Unlock()
}

// Owners fills owners[i] with the owner of events[i] (the zero T for a
// listener or the wake pipe) and says whether the wake pipe fired.
func (p *Poller[T]) Owners(events []Event, owners []T) (woken bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, ev := range events {
		switch {
		case ev.Fd == int32(p.wake[0]):
			woken = true
		case ev.Pad != listenerTag:
			owners[i] = p.owners[ev.Fd]
		}
	}
	return woken
}

// Each calls f for every owner in the table, once per fd it owns.
func (p *Poller[T]) Each(f func(fd int32, owner T)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for fd, o := range p.owners {
		f(fd, o)
	}
}

// AddListener puts a listening fd in the set, waking one loop per
// connection (EPOLLEXCLUSIVE).
func (p *Poller[T]) AddListener(fd int) error {
	return p.ctl(syscall.EPOLL_CTL_ADD, fd, In|epollExclusive, listenerTag)
}

// DeleteListener takes a listening fd out of the set.
func (p *Poller[T]) DeleteListener(fd int) { p.ctl(syscall.EPOLL_CTL_DEL, fd, 0, 0) }

// IsListener says whether ev is a listener's.
func IsListener(ev *Event) bool { return ev.Pad == listenerTag }

// Wait fills events with what is ready, waiting until something is or
// until the deadline SetDeadline set (then os.ErrDeadlineExceeded).
// epoll_wait never blocks here: when nothing is ready the goroutine parks
// in Go's netpoller on the epoll fd. A loop blocked in the syscall costs a
// thread wakeup and a P handoff on every event (+20-30 us per round trip,
// measured).
func (p *Poller[T]) Wait(events []Event) (int, error) {
	p.waitBuf = events
	rerr := p.rc.Read(p.waitFn)
	n, err := p.waitN, p.waitErr
	p.waitBuf, p.waitErr = nil, nil
	if err == nil {
		err = rerr
	}
	if err != nil {
		if errors.Is(err, syscall.EINTR) {
			err = nil
		}
		return 0, err // n is -1 after a failed epoll_wait
	}
	return n, nil
}

// SetDeadline sets when Wait returns at the latest, if it moves it earlier
// or the one set has passed.
func (p *Poller[T]) SetDeadline(now, t time.Time) {
	if p.to.IsZero() || !p.to.After(now) || p.to.After(t) {
		p.to = t
		p.ep.SetReadDeadline(t)
	}
}

// Wake makes Wait return with the wake pipe ready; safe for any goroutine.
func (p *Poller[T]) Wake() { syscall.Write(p.wake[1], []byte{1}) }

// DrainWake empties the wake pipe.
func (p *Poller[T]) DrainWake() {
	var b [64]byte
	for {
		if n, _ := Read(p.wake[0], b[:]); n < len(b) {
			break
		}
	}
}
