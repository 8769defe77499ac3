package netpoll

import (
	"errors"
	"os"
	"syscall"
	"testing"
	"time"
)

func socketPair(t *testing.T) (a, b int) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fds[0]); syscall.Close(fds[1]) })
	return fds[0], fds[1]
}

func open(t *testing.T) *Poller[string] {
	t.Helper()
	p, err := Open[string]()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// wait returns the owners of what is ready within a second.
func wait(t *testing.T, p *Poller[string]) (owners []string, woken bool) {
	t.Helper()
	p.SetDeadline(time.Now(), time.Now().Add(time.Second))
	evs := make([]Event, 8)
	n, err := p.Wait(evs)
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	owners = make([]string, n)
	woken = p.Owners(evs[:n], owners)
	return owners, woken
}

// The poller keeps each fd's mask and owner: readiness reports the owner,
// Watch changes the mask, Delete forgets the fd.
func TestOwnersAndMasks(t *testing.T) {
	p := open(t)
	a, peer := socketPair(t)
	f := &FD{Fd: a}
	if err := p.Add("pair-1", In, f); err != nil {
		t.Fatal(err)
	}
	if f.Mask != In {
		t.Fatalf("mask %#x after Add, want In", f.Mask)
	}
	syscall.Write(peer, []byte("x"))
	if owners, _ := wait(t, p); len(owners) != 1 || owners[0] != "pair-1" {
		t.Fatalf("ready owners %q, want [pair-1]", owners)
	}

	// Out of the set: the unread byte no longer reports, the deadline does.
	if err := p.Watch(f, 0); err != nil || f.Mask != 0 {
		t.Fatalf("Watch(0): %v, mask %#x", err, f.Mask)
	}
	p.SetDeadline(time.Now(), time.Now().Add(50*time.Millisecond))
	if n, err := p.Wait(make([]Event, 8)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Wait with nothing watched: %d events, %v; want the deadline", n, err)
	}
	if err := p.Watch(f, In|Out); err != nil || f.Mask != In|Out {
		t.Fatalf("Watch back in: %v, mask %#x", err, f.Mask)
	}

	p.Delete(f, "pair-1", false)
	if f.Mask != 0 {
		t.Fatalf("mask %#x after Delete", f.Mask)
	}
	n := 0
	p.Each(func(int32, string) { n++ })
	if n != 0 {
		t.Fatalf("%d owners left after Delete", n)
	}
}

// Add is all or none: when one fd cannot join, none of them stays.
func TestAddAllOrNone(t *testing.T) {
	p := open(t)
	a, _ := socketPair(t)
	good := &FD{Fd: a}
	bad := &FD{Fd: 1 << 20} // not open
	if err := p.Add("pair", In, good, bad); err == nil {
		t.Fatal("Add with a closed fd succeeded")
	}
	if good.Mask != 0 || bad.Mask != 0 {
		t.Fatalf("masks %#x %#x after a failed Add", good.Mask, bad.Mask)
	}
	n := 0
	p.Each(func(int32, string) { n++ })
	if n != 0 {
		t.Fatalf("%d owners kept after a failed Add", n)
	}
	// The fd that was rolled back can be added again.
	if err := p.Add("pair", In, good); err != nil {
		t.Fatalf("Add after rollback: %v", err)
	}
}

// Wake, from another goroutine, ends a Wait and is reported as such; after
// DrainWake it no longer fires.
func TestWake(t *testing.T) {
	p := open(t)
	go p.Wake()
	if owners, woken := wait(t, p); !woken || owners[0] != "" {
		t.Fatalf("woken %v, owners %q", woken, owners)
	}
	p.DrainWake()
	p.SetDeadline(time.Now(), time.Now().Add(50*time.Millisecond))
	if _, err := p.Wait(make([]Event, 8)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Wait after DrainWake: %v, want the deadline", err)
	}
}

// A wait allocates nothing (one closure made at Open).
func TestWaitAllocatesNothing(t *testing.T) {
	p := open(t)
	a, peer := socketPair(t)
	if err := p.Add("pair", In, &FD{Fd: a}); err != nil {
		t.Fatal(err)
	}
	syscall.Write(peer, []byte("x")) // stays unread: level-triggered, always ready
	evs := make([]Event, 8)
	if allocs := testing.AllocsPerRun(100, func() { p.Wait(evs) }); allocs != 0 {
		t.Fatalf("%v allocations per Wait", allocs)
	}
}
