package netpoll

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"
)

// The raw calls build and parse socket addresses themselves: a connect to a
// real listener and the accept on it must agree on both ends' addresses,
// for IPv4 and IPv6, and bytes must pass both ways.
func TestRawConnectAcceptReadWrite(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			host := "127.0.0.1:0"
			if network == "tcp6" {
				host = "[::1]:0"
			}
			ln, err := net.Listen(network, host)
			if err != nil {
				t.Skipf("no %s loopback: %v", network, err)
			}
			defer ln.Close()
			lfd, err := RawFD(ln.(*net.TCPListener))
			if err != nil {
				t.Fatal(err)
			}
			target := ln.Addr().(*net.TCPAddr).AddrPort()
			cfd, err := Connect(target, 30*time.Second)
			if err != nil {
				t.Fatalf("Connect: %v", err)
			}
			defer Close(cfd)
			var sfd int
			var remote netip.AddrPort
			deadline := time.Now().Add(5 * time.Second)
			for {
				sfd, remote, err = Accept(lfd)
				if !errors.Is(err, syscall.EAGAIN) || time.Now().After(deadline) {
					break
				}
				time.Sleep(time.Millisecond)
			}
			if err != nil {
				t.Fatalf("Accept: %v", err)
			}
			defer Close(sfd)
			if got := LocalAddr(cfd); got != remote {
				t.Errorf("accept says the client is %v, the client's socket is %v", remote, got)
			}
			if got := LocalAddr(sfd); got.Port() != target.Port() {
				t.Errorf("accepted socket on %v, listener on %v", got, target)
			}
			if err := ConnectError(cfd, Out); err != nil {
				t.Fatalf("ConnectError: %v", err)
			}
			msg := []byte("login")
			if rest, err := WriteSome(cfd, msg); err != nil || len(rest) != 0 {
				t.Fatalf("WriteSome: %v, %d left", err, len(rest))
			}
			buf := make([]byte, 16)
			var n int
			for n == 0 && time.Now().Before(deadline) {
				if n, err = Read(sfd, buf); errors.Is(err, syscall.EAGAIN) {
					n = 0
					time.Sleep(time.Millisecond)
				} else if err != nil {
					t.Fatalf("Read: %v", err)
				}
			}
			if !bytes.Equal(buf[:n], msg) {
				t.Fatalf("read %q, want %q", buf[:n], msg)
			}
			if err := Shutdown(cfd, syscall.SHUT_WR); err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
			for time.Now().Before(deadline) {
				if n, err = Read(sfd, buf); err == nil {
					break
				}
				time.Sleep(time.Millisecond)
			}
			if n != 0 || err != nil {
				t.Fatalf("after shutdown: read %d, %v; want EOF", n, err)
			}
		})
	}
}

// A refused connect comes back as the errno, not as a success.
func TestRawConnectRefused(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	target := ln.Addr().(*net.TCPAddr).AddrPort()
	ln.Close()
	fd, err := Connect(target, -1)
	if err != nil {
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("Connect: %v", err)
		}
		return
	}
	defer Close(fd)
	p := open(t)
	f := FD{Fd: fd}
	if err := p.Add("c", Out, &f); err != nil {
		t.Fatal(err)
	}
	p.SetDeadline(time.Now(), time.Now().Add(5*time.Second))
	evs := make([]Event, 4)
	n, err := p.Wait(evs)
	if err != nil || n == 0 {
		t.Fatalf("Wait: %d, %v", n, err)
	}
	if err := ConnectError(fd, evs[0].Events); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("ConnectError: %v, want ECONNREFUSED", err)
	}
}
