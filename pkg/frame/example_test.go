package frame_test

import (
	"encoding/binary"
	"fmt"

	"github.com/devgate/devgate/pkg/frame"
)

// login builds one frame of the original protocol: type, version, time,
// body length (big-endian), body.
func login(typ byte, body string) []byte {
	b := []byte{typ, 1, 0, 0, 0, 0}
	binary.BigEndian.PutUint16(b[4:], uint16(len(body)))
	return append(b, body...)
}

func ExampleMatcher_Find() {
	// Only type-1 (login) frames carry the device id; a heartbeat may come first.
	m := &frame.Matcher{KeyTypes: []byte{1}}
	stream := append(login(9, `{}`), login(1, `{"devid":"A1B2C3","os":"android"}`)...)

	_, err := m.Find(stream[:10]) // the first read was short
	fmt.Println(err == frame.ErrShort)

	key, err := m.Find(stream)
	fmt.Printf("%s %v\n", key, err)

	_, err = m.Find(login(1, `{"os":"ios"}`))
	fmt.Println(frame.Reason(err))
	// Output:
	// true
	// A1B2C3 <nil>
	// no_key
}
