package loadgen_test

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/devgate/devgate/pkg/demo"
	"github.com/devgate/devgate/pkg/loadgen"
)

// Sixteen devices exchange heartbeats with a demo backend for a moment.
func Example() {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	b := &demo.Backend{ID: "netty-1"}
	go b.Serve(l)
	defer b.Close()

	res, err := loadgen.Run(context.Background(), loadgen.Config{
		Mode:        loadgen.Pingpong,
		Targets:     []string{l.Addr().String()},
		Concurrency: 16,
		Duration:    100 * time.Millisecond,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(res.Mode, res.Failed, res.Ok > 0, res.P99us >= res.P50us)
	// Output: pingpong 0 true true
}
