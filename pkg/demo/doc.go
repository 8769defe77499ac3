// Package demo is a demo backend that stands in for a Netty message server
// in local clusters and tests. It owns nothing of the gateway: it reads
// frames the way pkg/frame describes them and answers each one with a frame
// of the same type, so a client can tell which backend it reached.
//
// A frame that carries the device id (the Key extractor finds it) is a
// login, answered with the JSON body {"backend":"<ID>","devid":"<id>"}. A
// frame without it whose JSON body has an integer member "seq" (a numbered
// heartbeat, as `devgate sim --check` sends) is answered with
// {"backend":"<ID>","devid":"<id>","seq":N}, where devid is the id of the
// last login on this connection ("" if none): it tells a device which
// backend answered and whether that backend saw its login on this
// connection, which is what a gateway moving live devices must guarantee
// (the gateway replays the login to the new backend). Any other frame, such
// as a plain heartbeat, is echoed. A bad header or a frame over
// MaxFrameLength closes the connection. A connection remembers only its
// device id.
//
// When the peer half-closes (a gateway moving the device does), the backend
// answers every whole frame it read, then closes the connection.
//
//	b := &demo.Backend{ID: "b1"}
//	l, _ := net.Listen("tcp", "127.0.0.1:9001")
//	go b.Serve(l)
//	defer b.Close()
package demo
