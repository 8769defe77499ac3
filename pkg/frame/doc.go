// Package frame owns devgate's view of the client's first bytes: it splits
// them into length-field frames and extracts the routing key (the device id)
// from the key frame. It knows bytes only: no sockets, no ring.
//
// Framing is described by Config with the numbers of Netty's
// LengthFieldBasedFrameDecoder; DefaultConfig is the original protocol
// (type u8, version u8, time u16, len u16 big-endian, JSON body). The key
// comes from an Extractor: JSONField (a member path in the JSON body, parsed
// by a small scanner that does not allocate) or ByteRange (a fixed field).
//
// The proxy keeps reading into one buffer and calls Matcher.Find after each
// read:
//
//	m := &frame.Matcher{KeyTypes: []byte{1}} // zero fields mean defaults
//	buf := make([]byte, 0, m.PrereadLimit())
//	for {
//		// read more into buf ...
//		key, err := m.Find(buf)
//		if err == frame.ErrShort {
//			continue // need more bytes; never returned once buf is full
//		}
//		if err != nil {
//			// close; count frame.Reason(err)
//		}
//		// route by key, then send all of buf to the backend first
//	}
//
// Errors are sentinels wrapped with detail; Reason maps them to metric
// labels. Keys alias the buffer and are always non-empty printable ASCII.
package frame
