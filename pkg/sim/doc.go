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
//
// Check (devgate sim --check) proves that moving live devices between
// backends is seamless. Each device logs in, then sends a numbered
// heartbeat (type 2, body {"seq":N}) every Interval (100 ms by default);
// a backend that opts in to moves answers {"backend":…,"devid":…,"seq":N},
// as pkg/demo and the Java reference backend do. Every answer is checked:
// each seq answered exactly once and in order, with the device's own devid
// (so the answering backend saw its login on that connection), and, once a
// device's answers switch to another backend, none from the old one.
// CheckReport counts disconnects, missing, duplicate and out-of-order
// answers, switches ("moves") with the pause of each (the gap between the
// last answer of the old backend and the first of the new one), and is
// Clean when no check failed. Senders are 16 goroutines each with one
// ticker, whatever the number of devices: 1,000 devices at 100 ms (10,000
// heartbeats a second) take about 30% of one core.
//
//	c, err := sim.NewChecker(sim.CheckConfig{Config: sim.Config{Target: "127.0.0.1:9000", Devices: 1000}})
//	if err != nil {
//		return err
//	}
//	r := c.Run(ctx) // until ctx ends, then the answers in flight; c.Status() meanwhile
//	fmt.Print(r)    // r.Clean, r.Problems()
package sim
