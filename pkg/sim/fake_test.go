package sim

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// hangUp, returned by an answer func, closes the connection.
var hangUp = []byte("hang up")

// fakeServer answers each connection with answer(connection number, frame
// type, body); a nil reply sends nothing and keeps reading; hangUp closes.
// It runs until the test ends.
func fakeServer(t *testing.T, answer func(n int, typ byte, body []byte) []byte) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
		count atomic.Int64
	)
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			n := int(count.Add(1) - 1)
			wg.Go(func() {
				defer c.Close()
				var buf []byte
				for {
					typ, body, b, err := readFrame(c, buf)
					buf = b
					if err != nil {
						return
					}
					r := answer(n, typ, body)
					if len(r) > 0 && &r[0] == &hangUp[0] {
						return
					}
					if r != nil {
						if _, err := c.Write(r); err != nil {
							return
						}
					}
				}
			})
		}
	})
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return l.Addr().String()
}

// TestRunMoved has every other connection land on another backend.
func TestRunMoved(t *testing.T) {
	addr := fakeServer(t, func(n int, typ byte, body []byte) []byte {
		if typ == TypeLogin {
			body = fmt.Appendf(nil, `{"backend":"b%d"}`, n%2)
		}
		return AppendFrame(nil, typ, 1, 0, body)
	})
	// One worker, so connections alternate b0, b1, b0, ... in order.
	rep, err := Run(context.Background(), Config{Target: addr, Devices: 4, Concurrency: 1, Reconnects: 1})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Moved != 4 || rep.Sticky != 0 || rep.PerBackend["b0"] != 4 || rep.Failed != 0 {
		t.Fatalf("report:\n%s", rep)
	}
}

func TestRunBadReplies(t *testing.T) {
	for _, tc := range []struct {
		name   string
		answer func(typ byte, body []byte) []byte
		reason string
	}{
		{"no backend", func(typ byte, _ []byte) []byte {
			return AppendFrame(nil, typ, 1, 0, []byte(`{"devid":"x"}`))
		}, "login_no_backend"},
		{"not json", func(typ byte, _ []byte) []byte {
			return AppendFrame(nil, typ, 1, 0, []byte(`hello`))
		}, "login_bad_json"},
		{"wrong device", func(typ byte, _ []byte) []byte {
			return AppendFrame(nil, typ, 1, 0, []byte(`{"backend":"b","devid":"other"}`))
		}, "login_wrong_device"},
		{"wrong type", func(typ byte, body []byte) []byte {
			return AppendFrame(nil, typ+1, 1, 0, body)
		}, "login_wrong_type"},
		{"short body", func(byte, []byte) []byte {
			return []byte{1, 1, 0, 0, 0, 9} // promises a body that never comes
		}, "login_timeout"},
		{"hangs up", func(byte, []byte) []byte { return hangUp }, "login_closed"},
		{"no heartbeat echo", func(typ byte, _ []byte) []byte {
			if typ == TypeLogin {
				return AppendFrame(nil, typ, 1, 0, []byte(`{"backend":"b"}`))
			}
			return nil
		}, "heartbeat_timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := fakeServer(t, func(_ int, typ byte, body []byte) []byte { return tc.answer(typ, body) })
			begin := time.Now()
			rep, err := Run(context.Background(), Config{
				Target: addr, Devices: 2, Reconnects: -1, Timeout: 200 * time.Millisecond,
			})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Failed != 2 || rep.Errors[tc.reason] != 2 {
				t.Fatalf("want 2 x %s, report:\n%s", tc.reason, rep)
			}
			if d := time.Since(begin); d > 2*time.Second {
				t.Fatalf("Run took %v", d)
			}
		})
	}
}

// TestRunCancel cancels Run while devices wait for replies that never come.
func TestRunCancel(t *testing.T) {
	addr := fakeServer(t, func(int, byte, []byte) []byte { return nil })
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	begin := time.Now()
	rep, err := Run(ctx, Config{Target: addr, Devices: 100, Concurrency: 4, Timeout: time.Minute})
	if err == nil {
		t.Fatal("Run after cancel returned nil")
	}
	if d := time.Since(begin); d > 2*time.Second {
		t.Fatalf("Run took %v after cancel", d)
	}
	if rep.Errors["canceled"] != 4 || rep.Failed != 4 {
		t.Fatalf("report:\n%s", rep)
	}
}

// TestRunInterval checks heartbeats wait Interval and a cancel interrupts it.
func TestRunInterval(t *testing.T) {
	addr := fakeServer(t, func(_ int, typ byte, body []byte) []byte {
		if typ == TypeLogin {
			body = []byte(`{"backend":"b"}`)
		}
		return AppendFrame(nil, typ, 1, 0, body)
	})
	begin := time.Now()
	rep, err := Run(context.Background(), Config{
		Target: addr, Devices: 2, Reconnects: -1, Heartbeats: 3, Interval: 30 * time.Millisecond,
	})
	if err != nil || rep.Connections != 2 {
		t.Fatalf("%v\n%s", err, rep)
	}
	if d := time.Since(begin); d < 90*time.Millisecond {
		t.Fatalf("3 heartbeats at 30ms took %v", d)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	rep, _ = Run(ctx, Config{Target: addr, Devices: 1, Interval: time.Hour})
	if rep.Errors["canceled"] != 1 {
		t.Fatalf("report:\n%s", rep)
	}
}

func TestLoginBodySize(t *testing.T) {
	b := loginBody(Config{Devices: 1}.DeviceID(0))
	if len(b) < 100 || len(b) > 200 || !strings.HasPrefix(string(b), `{"devid":"dev-000000","token":"`) {
		t.Fatalf("login body %d bytes: %s", len(b), b)
	}
}
