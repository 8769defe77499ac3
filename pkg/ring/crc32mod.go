package ring

import "hash/crc32"

// crcRing reproduces the OpenResty balancer: peers[crc32(devid) % N + 1] over
// the configured peer list. Lua is 1-based, so index crc % N here is the same
// backend. ngx.crc32_long is the IEEE (zlib) CRC-32.
type crcRing struct {
	backends []Backend // configured order
}

func (r *crcRing) Lookup(key []byte) int {
	if len(r.backends) == 0 {
		return -1
	}
	return int(crc32.ChecksumIEEE(key) % uint32(len(r.backends)))
}

// Owners is the owner followed by the next backends in configured order,
// wrapping around: the order an OpenResty retry over the list would take.
func (r *crcRing) Owners(key []byte, n int, dst []int) []int {
	n = min(n, len(r.backends))
	if n <= 0 {
		return dst
	}
	first := r.Lookup(key)
	for k := range n {
		dst = append(dst, (first+k)%len(r.backends))
	}
	return dst
}

func (r *crcRing) Backends() []Backend { return r.backends }
func (r *crcRing) Len() int            { return len(r.backends) }
func (r *crcRing) Mode() Mode          { return ModeCRC32Mod }

// Shares are equal: crc32 spreads keys evenly and weights do not apply.
func (r *crcRing) Shares() []float64 {
	out := make([]float64, len(r.backends))
	for i := range out {
		out[i] = 1 / float64(len(out))
	}
	return out
}
