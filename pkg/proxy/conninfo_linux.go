package proxy

// written is the bytes the loop wrote for the pair, per direction.
func (pr *evPair) written() (in, out uint64) {
	return uint64(pr.n[0].Load()), uint64(pr.n[1].Load())
}
