//go:build !unix

package main

// raiseNofile: no file limit to read (0: unknown).
func raiseNofile() (soft, hard uint64, err error) { return 0, 0, nil }
