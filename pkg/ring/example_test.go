package ring_test

import (
	"fmt"

	"github.com/devgate/devgate/pkg/ring"
)

func Example() {
	backends := []ring.Backend{
		{ID: "netty-a", Addr: "10.0.0.1:9000"},
		{ID: "netty-b", Addr: "10.0.0.2:9000"},
		{ID: "netty-c", Addr: "10.0.0.3:9000", Weight: 200}, // twice the devices of the others
	}
	r, err := ring.New(ring.ModeConsistent, backends)
	if err != nil {
		panic(err)
	}
	key := []byte("356938035643803")
	fmt.Println("owner:", r.Backends()[r.Lookup(key)].Addr)
	for _, i := range r.Owners(key, 3, nil) {
		fmt.Println("try:", r.Backends()[i].ID)
	}

	// netty-b leaves: only its devices move, each to its next owner.
	r2, err := ring.NewFrom(r, ring.ModeConsistent, []ring.Backend{backends[0], backends[2]})
	if err != nil {
		panic(err)
	}
	fmt.Println("after netty-b leaves:", r2.Backends()[r2.Lookup(key)].ID)
	// Output:
	// owner: 10.0.0.2:9000
	// try: netty-b
	// try: netty-a
	// try: netty-c
	// after netty-b leaves: netty-a
}
