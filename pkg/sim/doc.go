// Package sim is the device simulator behind `devgate sim` and the tests:
// it connects many devices to a gateway, logs each one in, sends heartbeats,
// reconnects, and reports which backend each device reached, whether its
// reconnects stuck to that backend, and how even the spread was.
//
// It speaks the original protocol (DESIGN.md "The wire"): a 6-byte
// big-endian header (type, version, time, body length) and a JSON body;
// AppendFrame builds one. A backend answers a login with a JSON body naming
// itself in "backend", as pkg/demo does.
//
//	rep, err := sim.Run(ctx, sim.Config{Target: "127.0.0.1:9000", Devices: 1000})
//	if err != nil {
//		return err
//	}
//	fmt.Print(rep)
package sim
