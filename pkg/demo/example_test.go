package demo_test

import (
	"fmt"
	"io"
	"net"

	"github.com/devgate/devgate/pkg/demo"
	"github.com/devgate/devgate/pkg/sim"
)

func ExampleBackend() {
	b := &demo.Backend{ID: "b1"}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go b.Serve(l)
	defer b.Close()

	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		panic(err)
	}
	defer c.Close()

	// A login is answered with the backend's id, a numbered heartbeat with
	// the id and the device this connection logged in as, any other frame
	// is echoed; all keep their type.
	var req []byte
	req = sim.AppendFrame(req, sim.TypeLogin, 1, 0, []byte(`{"devid":"dev-000042","os":"android"}`))
	req = sim.AppendFrame(req, sim.TypeHeartbeat, 1, 0, []byte(`{"seq":1}`))
	req = sim.AppendFrame(req, sim.TypeHeartbeat, 1, 0, []byte(`{"hb":1}`))
	c.Write(req)
	for range 3 {
		hdr := make([]byte, 6)
		io.ReadFull(c, hdr)
		body := make([]byte, int(hdr[4])<<8|int(hdr[5]))
		io.ReadFull(c, body)
		fmt.Printf("type %d: %s\n", hdr[0], body)
	}
	// Output:
	// type 1: {"backend":"b1","devid":"dev-000042"}
	// type 2: {"backend":"b1","devid":"dev-000042","seq":1}
	// type 2: {"hb":1}
}
