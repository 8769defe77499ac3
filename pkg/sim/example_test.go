package sim_test

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/devgate/devgate/pkg/demo"
	"github.com/devgate/devgate/pkg/sim"
)

func ExampleRun() {
	// A demo backend stands in for the gateway here; point Target at a
	// gateway to see how it spreads devices over its backends.
	b := &demo.Backend{ID: "b1"}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go b.Serve(l)
	defer b.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rep, err := sim.Run(ctx, sim.Config{
		Target:     l.Addr().String(),
		Devices:    100,
		Reconnects: 2, // three connections per device
		Heartbeats: 2,
	})
	if err != nil {
		panic(err)
	}
	fmt.Println(rep.Connections, rep.Failed, rep.PerBackend, rep.Sticky)
	// Output: 300 0 map[b1:100] 100
}

func ExampleAppendFrame() {
	f := sim.AppendFrame(nil, sim.TypeHeartbeat, 1, 0, []byte(`{}`))
	fmt.Printf("% x\n", f)
	// Output: 02 01 00 00 00 02 7b 7d
}
