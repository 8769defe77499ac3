package sim_test

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/devgate/devgate/pkg/sim"
)

// mover is a test relay that moves every device connection from backend a
// to backend b when move is closed, the way a gateway's rehome does: cut
// the device's frames at a frame boundary, half-close a, forward a's
// answers until a closes, dial b, replay the saved login (and, if swallow,
// drop b's answer to it), then go on. It checks the backend side of the
// contract (pkg/demo) and that the checker measures a move, before a
// gateway does it.
type mover struct {
	a, b    string
	move    chan struct{}
	replay  bool // write the saved login to b
	swallow bool // drop b's answer to it

	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func startMover(t *testing.T, m *mover) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m.move = make(chan struct{})
	m.wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			m.track(c)
			m.wg.Go(func() { m.relay(c) })
		}
	})
	t.Cleanup(func() {
		l.Close()
		m.mu.Lock()
		for _, c := range m.conns {
			c.Close()
		}
		m.mu.Unlock()
		m.wg.Wait()
	})
	return l.Addr().String()
}

func (m *mover) track(c net.Conn) {
	m.mu.Lock()
	m.conns = append(m.conns, c)
	m.mu.Unlock()
}

// readRaw reads one whole frame, header included.
func readRaw(r io.Reader) ([]byte, error) {
	hdr := make([]byte, sim.HeaderLen)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return nil, err
	}
	f := make([]byte, sim.HeaderLen+int(binary.BigEndian.Uint16(hdr[4:])))
	copy(f, hdr)
	_, err := io.ReadFull(r, f[sim.HeaderLen:])
	return f, err
}

func (m *mover) dial(addr string) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err == nil {
		m.track(c)
	}
	return c, err
}

func (m *mover) relay(dev net.Conn) {
	defer dev.Close()
	login, err := readRaw(dev)
	if err != nil {
		return
	}
	up, err := m.dial(m.a)
	if err != nil {
		return
	}
	defer func() { up.Close() }()
	up.Write(login)
	upDone := make(chan struct{})
	m.wg.Go(func() { io.Copy(dev, up); close(upDone) })

	frames := make(chan []byte)
	m.wg.Go(func() {
		defer close(frames)
		for {
			f, err := readRaw(dev)
			if err != nil {
				return
			}
			frames <- f
		}
	})
	move := m.move
	for {
		select {
		case f, ok := <-frames:
			if !ok {
				return
			}
			up.Write(f)
			continue
		case <-move:
		}
		move = nil // once per connection
		up.(*net.TCPConn).CloseWrite()
		<-upDone // a answered what it read, then closed
		up.Close()
		if up, err = m.dial(m.b); err != nil {
			return
		}
		if m.replay {
			up.Write(login)
			if m.swallow {
				if _, err := readRaw(up); err != nil {
					return
				}
			}
		}
		upDone = make(chan struct{})
		m.wg.Go(func() { io.Copy(dev, up); close(upDone) })
	}
}

// TestCheckMeasuresAMove moves live devices between two demo backends
// through the mover: done right, the check is clean with one switch per
// device and its pause; without the replayed login, or with b's answer
// to it forwarded, the check fails and says why.
func TestCheckMeasuresAMove(t *testing.T) {
	const devices = 20
	for _, tc := range []struct {
		name            string
		replay, swallow bool
		check           func(r sim.CheckReport) bool
	}{
		{"rehome", true, true, func(r sim.CheckReport) bool {
			return r.Clean && r.Switches == devices && r.Moves["a>b"] == devices && r.PerBackend["b"] == devices &&
				r.PauseMax > 0 && r.PauseP50 > 0 && r.Disconnects == 0 && r.Missing == 0
		}},
		{"no login replayed", false, false, func(r sim.CheckReport) bool {
			return !r.Clean && r.Switches == devices && r.DevidEmpty > 0 && r.ExtraFrames == 0 && r.Disconnects == 0
		}},
		{"answer to the login forwarded", true, false, func(r sim.CheckReport) bool {
			return !r.Clean && r.Switches == devices && r.ExtraFrames == devices && r.DevidEmpty == 0
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, a := backend(t, "a")
			_, b := backend(t, "b")
			m := &mover{a: a, b: b, replay: tc.replay, swallow: tc.swallow}
			addr := startMover(t, m)
			c, err := sim.NewChecker(sim.CheckConfig{Config: sim.Config{Target: addr, Devices: devices, Interval: 10 * time.Millisecond}})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan sim.CheckReport, 1)
			go func() { done <- c.Run(ctx) }()
			waitUntil(t, "every device answered by a", func() bool { return c.Status().Answered >= devices*5 })
			close(m.move)
			waitUntil(t, "every device switched", func() bool { return c.Status().Switches == devices })
			answered := c.Status().Answered
			waitUntil(t, "answers from b", func() bool { return c.Status().Answered >= answered+devices*5 })
			cancel()
			r := <-done
			if !tc.check(r) {
				t.Fatalf("report:\n%s%+v", r, r)
			}
			t.Logf("pause p50 %v p99 %v max %v; problems %v", r.PauseP50, r.PauseP99, r.PauseMax, r.Problems())
		})
	}
}
