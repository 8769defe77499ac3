//go:build !unix

package proxy

func nofileLimit() uint64 { return 0 }
