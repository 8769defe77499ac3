package proxy

import (
	"fmt"
	"runtime"
	"testing"
)

// The devices counted stay within Flap.Devices, in the device cache's
// entries (no second LRU), at a bounded cost each.
func TestFlapMemoryBound(t *testing.T) {
	const n = 20000
	p := &Proxy{Flap: Flap{Max: 10, Devices: n}, DeviceCacheSize: 100}
	p.init()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range 3 * n { // 32-byte ids; the first 2n are pushed out
		p.flapCheck(fmt.Sprintf("device-%025d", i))
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if got := p.devices.lru.Len(); got != n {
		t.Fatalf("%d devices counted, want the bound %d", got, n)
	}
	per := (int64(after.HeapAlloc) - int64(before.HeapAlloc)) / n
	t.Logf("%d bytes per device counted (32-byte ids)", per)
	if per > 250 {
		t.Fatalf("%d bytes per device counted", per)
	}
}
