package sim_test

import (
	"context"
	"testing"
	"time"

	"github.com/devgate/devgate/pkg/sim"
)

// TestCheckDemoBackend checks numbered heartbeats against the demo backend
// directly: nothing moves, so the run is clean with no switch.
func TestCheckDemoBackend(t *testing.T) {
	_, addr := backend(t, "b1")
	c, err := sim.NewChecker(sim.CheckConfig{Config: sim.Config{Target: addr, Devices: 50, Interval: 20 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan sim.CheckReport, 1)
	go func() { done <- c.Run(ctx) }()
	waitUntil(t, "every device answered a few times", func() bool { return c.Status().Answered >= 50*5 })
	cancel()
	r := <-done
	if !r.Clean || r.Connected != 50 || r.PerBackend["b1"] != 50 || r.Switches != 0 || r.Disconnects != 0 ||
		r.InFlight != 0 || r.Answered != r.Sent || r.Logins != 50 {
		t.Fatalf("report:\n%s%+v", r, r)
	}
	t.Logf("\n%s", r)
}

// TestCheckBackendKilled: when the backend goes away under the devices,
// the check counts every disconnect and fails.
func TestCheckBackendKilled(t *testing.T) {
	b, addr := backend(t, "b1")
	c, err := sim.NewChecker(sim.CheckConfig{Config: sim.Config{Target: addr, Devices: 20, Interval: 20 * time.Millisecond,
		Timeout: time.Second}, BackoffMin: 50 * time.Millisecond, BackoffMax: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan sim.CheckReport, 1)
	go func() { done <- c.Run(ctx) }()
	waitUntil(t, "every device answered", func() bool { return c.Status().Answered >= 20*3 })
	b.Close()
	waitUntil(t, "every device disconnected", func() bool { return c.Status().Disconnects == 20 })
	waitUntil(t, "reconnects refused", func() bool { return c.Status().Errors["dial_refused"] > 0 })
	cancel()
	r := <-done
	if r.Clean || r.Disconnects != 20 || r.Connected != 0 || r.Switches != 0 || r.StaleAnswers != 0 {
		t.Fatalf("report:\n%s%+v", r, r)
	}
	t.Logf("\n%s", r)
}
