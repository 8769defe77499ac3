// Package demo is a demo backend that stands in for a Netty message server
// in local clusters and tests. It owns nothing of the gateway: it reads
// frames the way pkg/frame describes them and answers each one with a frame
// of the same type, so a client can tell which backend it reached.
//
// A frame that carries the device id (the Key extractor finds it) is
// answered with the JSON body {"backend":"<ID>","devid":"<id>"}; any other
// frame, such as a heartbeat, is echoed. A bad header or a frame over
// MaxFrameLength closes the connection.
//
//	b := &demo.Backend{ID: "b1"}
//	l, _ := net.Listen("tcp", "127.0.0.1:9001")
//	go b.Serve(l)
//	defer b.Close()
package demo
