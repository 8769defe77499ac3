package loadgen

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/devgate/devgate/pkg/demo"
)

// backend starts a demo backend on loopback and returns its address.
func backend(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &demo.Backend{ID: "b1"}
	go b.Serve(l)
	t.Cleanup(func() { b.Close() })
	return l.Addr().String()
}

func TestModes(t *testing.T) {
	addr := backend(t)
	short := 200 * time.Millisecond
	tests := []struct {
		name  string
		cfg   Config
		check func(*Result) bool
	}{
		{"hold", Config{Mode: Hold, Devices: 50, Concurrency: 8, Sources: 4, SourceBase: 99},
			func(r *Result) bool { return r.Ok == 50 && len(r.held) == 50 }},
		{"churn", Config{Mode: Churn, Concurrency: 4, Duration: short, Sources: 8},
			func(r *Result) bool { return r.Ok > 0 && r.ConnsPerSec > 0 && r.P99us >= r.P50us }},
		{"pingpong", Config{Mode: Pingpong, Concurrency: 4, Duration: short},
			func(r *Result) bool { return r.Ok > 0 && r.OpsPerSec > 0 && r.P999us >= r.P99us }},
		{"pingpong paced", Config{Mode: Pingpong, Concurrency: 4, Duration: short, Interval: 20 * time.Millisecond},
			func(r *Result) bool { return r.Ok > 0 && r.Ok <= 4*(200/20+1) }},
		{"bulk", Config{Mode: Bulk, Concurrency: 2, Duration: short},
			func(r *Result) bool { return r.Ok == 2 && r.RxBytes > 0 && r.MBPerSec > 0 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Targets = []string{addr}
			r, err := Run(context.Background(), tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Release()
			if r.Failed != 0 || !tt.check(r) {
				t.Errorf("%s: %+v", tt.name, *r)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	for _, c := range []Config{
		{Mode: "nap", Targets: []string{"x:1"}},
		{Mode: Hold},
		{Mode: Bulk, Targets: []string{"x:1"}, FrameSize: 70000},
	} {
		if _, err := Run(context.Background(), c); err == nil {
			t.Errorf("%+v: no error", c)
		}
	}
}
