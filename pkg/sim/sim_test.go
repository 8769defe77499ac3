package sim_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/devgate/devgate/pkg/demo"
	"github.com/devgate/devgate/pkg/frame"
	"github.com/devgate/devgate/pkg/sim"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// backend serves a demo backend on loopback until the test ends.
func backend(t *testing.T, id string) (*demo.Backend, string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &demo.Backend{ID: id}
	served := make(chan error, 1)
	go func() { served <- b.Serve(l) }()
	t.Cleanup(func() {
		b.Close()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return b, l.Addr().String()
}

func TestAppendFrame(t *testing.T) {
	body := []byte(`{"devid":"dev-000001"}`)
	f := sim.AppendFrame([]byte("x"), sim.TypeLogin, 3, 0x0102, body)
	want := append([]byte{'x', 1, 3, 1, 2, 0, byte(len(body))}, body...)
	if string(f) != string(want) {
		t.Fatalf("AppendFrame = % x, want % x", f, want)
	}
	// The frame reads back as one whole frame of the default framing.
	if n, err := frame.DefaultConfig().FrameLen(f[1:]); err != nil || n != len(f)-1 {
		t.Fatalf("FrameLen = %d, %v", n, err)
	}

	big := make([]byte, sim.MaxBody+1)
	if got := sim.AppendFrame([]byte("x"), 1, 1, 0, big); string(got) != "x" {
		t.Fatalf("oversized body appended %d bytes", len(got)-1)
	}
	if got, err := sim.TryAppendFrame([]byte("x"), 1, 1, 0, big); !errors.Is(err, sim.ErrBodyTooLarge) || string(got) != "x" {
		t.Fatalf("TryAppendFrame oversized: %d bytes, %v", len(got), err)
	}
	if got, err := sim.TryAppendFrame(nil, 1, 1, 0, big[:sim.MaxBody]); err != nil || len(got) != sim.HeaderLen+sim.MaxBody {
		t.Fatalf("TryAppendFrame max body: %d bytes, %v", len(got), err)
	}
}

func TestRunOneBackend(t *testing.T) {
	b, addr := backend(t, "b1")
	rep, err := sim.Run(context.Background(), sim.Config{
		Target: addr, Devices: 40, Concurrency: 8, Reconnects: 2, Heartbeats: 3,
		Timeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Devices != 40 || rep.Connections != 120 || rep.Failed != 0 || len(rep.Errors) != 0 {
		t.Fatalf("report:\n%s", rep)
	}
	if len(rep.PerBackend) != 1 || rep.PerBackend["b1"] != 40 {
		t.Fatalf("PerBackend %v", rep.PerBackend)
	}
	if rep.Sticky != 40 || rep.Moved != 0 || rep.MaxOverMean != 1 {
		t.Fatalf("sticky %d moved %d max/mean %v", rep.Sticky, rep.Moved, rep.MaxOverMean)
	}
	if s := b.Stats(); s.Logins != 120 || s.Frames != 120*4 || s.Accepted != 120 {
		t.Fatalf("backend stats %+v", s)
	}
	out := rep.String()
	for _, want := range []string{"devices 40, connections 120, failed 0", "b1", "100.0%", "sticky 40/40"} {
		if !strings.Contains(out, want) {
			t.Errorf("String() lacks %q:\n%s", want, out)
		}
	}
}

func TestRunDefaults(t *testing.T) {
	b, addr := backend(t, "b1")
	rep, err := sim.Run(context.Background(), sim.Config{Target: addr, Devices: 3})
	if err != nil || rep.Connections != 6 || rep.Sticky != 3 {
		t.Fatalf("%v\n%s", err, rep)
	}
	// Default: one reconnect, one heartbeat each.
	if s := b.Stats(); s.Frames != 12 {
		t.Fatalf("backend stats %+v", s)
	}
	rep, err = sim.Run(context.Background(), sim.Config{Target: addr, Devices: 2, Reconnects: -1, Heartbeats: -1})
	if err != nil || rep.Connections != 2 || b.Stats().Frames != 14 {
		t.Fatalf("%v %+v\n%s", err, b.Stats(), rep)
	}
}

// TestRunRefused runs against a port nobody listens on.
func TestRunRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()

	timeout := 2 * time.Second
	begin := time.Now()
	rep, err := sim.Run(context.Background(), sim.Config{Target: addr, Devices: 10, Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(begin); d > timeout {
		t.Fatalf("Run took %v", d)
	}
	if rep.Failed != 20 || rep.Connections != 0 || rep.Errors["dial_refused"] != 20 {
		t.Fatalf("report:\n%s", rep)
	}
	if rep.Sticky != 0 || len(rep.PerBackend) != 0 {
		t.Fatalf("failed devices counted as landed:\n%s", rep)
	}
	if !strings.Contains(rep.String(), "dial_refused 20") {
		t.Errorf("String() lacks the error:\n%s", rep)
	}
}

func TestRunBadConfig(t *testing.T) {
	for _, cfg := range []sim.Config{{Devices: 1}, {Target: "127.0.0.1:1"}, {Target: "127.0.0.1:1", Devices: -1}} {
		if _, err := sim.Run(context.Background(), cfg); err == nil {
			t.Errorf("Run(%+v) = nil error", cfg)
		}
	}
}

func TestDeviceID(t *testing.T) {
	for _, tc := range []struct {
		cfg  sim.Config
		i    int
		want string
	}{
		{sim.Config{Devices: 10}, 7, "dev-000007"},
		{sim.Config{Devices: 2_000_000, Prefix: "ph-"}, 42, "ph-0000042"},
		{sim.Config{Devices: 1_000_000}, 999_999, "dev-999999"},
	} {
		if got := tc.cfg.DeviceID(tc.i); got != tc.want {
			t.Errorf("DeviceID(%d) = %q, want %q", tc.i, got, tc.want)
		}
	}
}

func TestRunRecordBackends(t *testing.T) {
	_, addr := backend(t, "b1")
	rep, err := sim.Run(context.Background(), sim.Config{Target: addr, Devices: 5, Reconnects: 2})
	if err != nil || rep.Backends != nil {
		t.Fatalf("without RecordBackends: %v %v", err, rep.Backends)
	}
	rep, err = sim.Run(context.Background(), sim.Config{Target: addr, Devices: 5, Reconnects: 2, RecordBackends: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Backends) != 5 {
		t.Fatalf("Backends %v", rep.Backends)
	}
	for i, conns := range rep.Backends {
		if len(conns) != 3 || conns[0] != "b1" || conns[1] != "b1" || conns[2] != "b1" {
			t.Fatalf("device %d: %v", i, conns)
		}
	}
}
