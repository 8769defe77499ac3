//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/devgate/devgate/pkg/sim"
)

// fleet is a set of devices that hold their connection open (a login, then
// reading until the connection closes) and reconnect at once when it is
// closed: what a phone does. Every connection is recorded with the backend
// that answered its login, so a test can tell who moved, when and where.
type fleet struct {
	target string
	ids    []string
	cancel context.CancelFunc
	wg     sync.WaitGroup
	sem    chan struct{} // bounds concurrent dial+login

	mu    sync.Mutex
	conns [][]connRec // per device
	fails []int       // failed attempts per device
}

type connRec struct {
	backend        string
	opened, closed time.Time
}

// startFleet connects n devices (ids prefix+i) through target and waits
// until each is logged in.
func startFleet(t *testing.T, target, prefix string, n int) *fleet {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f := &fleet{target: target, cancel: cancel, sem: make(chan struct{}, 64),
		conns: make([][]connRec, n), fails: make([]int, n)}
	cfg := sim.Config{Prefix: prefix, Devices: n}
	for i := range n {
		f.ids = append(f.ids, cfg.DeviceID(i))
	}
	for i := range n {
		f.wg.Go(func() { f.device(ctx, i) })
	}
	t.Cleanup(f.stop)
	start := time.Now()
	eventually(t, 60*time.Second, fmt.Sprintf("%d devices connected", n), func() bool { return f.connected() == n })
	t.Logf("fleet %s: %d devices connected in %v", prefix, n, time.Since(start).Round(time.Millisecond))
	return f
}

// stop closes every device and waits for their goroutines.
func (f *fleet) stop() {
	f.cancel()
	f.wg.Wait()
}

func (f *fleet) device(ctx context.Context, i int) {
	id := f.ids[i]
	var wbuf []byte
	wbuf = sim.AppendFrame(wbuf, sim.TypeLogin, 1, 0, []byte(fmt.Sprintf(`{"devid":%q,"os":"android"}`, id)))
	for ctx.Err() == nil {
		f.sem <- struct{}{}
		conn, backend, err := login(ctx, f.target, wbuf)
		<-f.sem
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			f.mu.Lock()
			f.fails[i]++
			f.mu.Unlock()
			sleepCtx(ctx, 100*time.Millisecond)
			continue
		}
		f.mu.Lock()
		f.conns[i] = append(f.conns[i], connRec{backend: backend, opened: time.Now()})
		k := len(f.conns[i]) - 1
		f.mu.Unlock()
		stop := context.AfterFunc(ctx, func() { conn.Close() })
		io.Copy(io.Discard, conn) // until the gateway or backend closes it
		stop()
		conn.Close()
		if ctx.Err() != nil {
			return
		}
		f.mu.Lock()
		f.conns[i][k].closed = time.Now()
		f.mu.Unlock()
		// Reconnect after a short jittered pause, as a device would.
		sleepCtx(ctx, time.Duration(20+rand.IntN(80))*time.Millisecond)
	}
}

// login dials, sends the login frame and returns the backend of the reply.
func login(ctx context.Context, target string, frame []byte) (net.Conn, string, error) {
	d := net.Dialer{Timeout: 3 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", target)
	if err != nil {
		return nil, "", err
	}
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write(frame); err != nil {
		conn.Close()
		return nil, "", err
	}
	var hdr [sim.HeaderLen]byte
	if _, err := io.ReadFull(conn, hdr[:]); err != nil {
		conn.Close()
		return nil, "", err
	}
	body := make([]byte, int(hdr[4])<<8|int(hdr[5]))
	if _, err := io.ReadFull(conn, body); err != nil {
		conn.Close()
		return nil, "", err
	}
	var reply struct {
		Backend string `json:"backend"`
	}
	if err := json.Unmarshal(body, &reply); err != nil || reply.Backend == "" {
		conn.Close()
		return nil, "", fmt.Errorf("bad login reply %q", body)
	}
	conn.SetDeadline(time.Time{})
	return conn, reply.Backend, nil
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// connected counts devices whose latest connection is open.
func (f *fleet) connected() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, cs := range f.conns {
		if len(cs) > 0 && cs[len(cs)-1].closed.IsZero() {
			n++
		}
	}
	return n
}

// current returns device index -> backend of its latest connection.
func (f *fleet) current() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]string, len(f.conns))
	for i, cs := range f.conns {
		if len(cs) > 0 {
			out[i] = cs[len(cs)-1].backend
		}
	}
	return out
}

// history returns a copy of every device's connections.
func (f *fleet) history() [][]connRec {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([][]connRec, len(f.conns))
	for i, cs := range f.conns {
		out[i] = append([]connRec(nil), cs...)
	}
	return out
}

func (f *fleet) failures() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, x := range f.fails {
		n += x
	}
	return n
}

// closesSince returns the close times of connections closed after t0, sorted.
func (f *fleet) closesSince(t0 time.Time) []time.Time {
	var out []time.Time
	for _, cs := range f.history() {
		for _, c := range cs {
			if !c.closed.IsZero() && c.closed.After(t0) {
				out = append(out, c.closed)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Before(out[j]) })
	return out
}

// rate is closes per second between the first and the last close, and the
// highest count in any 1 s window.
func rate(ts []time.Time) (perSec float64, span time.Duration, maxPerWindow int) {
	if len(ts) < 2 {
		return 0, 0, len(ts)
	}
	span = ts[len(ts)-1].Sub(ts[0])
	perSec = float64(len(ts)-1) / span.Seconds()
	j := 0
	for i := range ts {
		for ts[i].Sub(ts[j]) >= time.Second {
			j++
		}
		maxPerWindow = max(maxPerWindow, i-j+1)
	}
	return perSec, span, maxPerWindow
}

// byBackend counts devices per backend.
func byBackend(cur []string) map[string]int {
	m := map[string]int{}
	for _, b := range cur {
		m[b]++
	}
	return m
}
