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
//
// Hold (devgate sim --hold) keeps the devices connected instead, with a
// heartbeat every Interval, and reconnects each one whose connection ends
// after an exponential backoff with jitter, as real devices do; Status and
// HoldStatus.Line show live where the devices are, so a drain or a
// rebalance can be watched. It runs one goroutine per device: fine for
// thousands of devices (`devgate load --mode hold` is the tool for large counts).
//
//	h, err := sim.NewHolder(sim.HoldConfig{Config: sim.Config{Target: "127.0.0.1:9000", Devices: 1000}})
//	if err != nil {
//		return err
//	}
//	st := h.Run(ctx) // until ctx ends; h.Status() meanwhile
//	fmt.Print(st)
package sim
