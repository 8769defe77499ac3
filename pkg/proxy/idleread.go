package proxy

import (
	"net"
	"syscall"
)

// idleReader reads a connection into a pooled 4 KiB buffer that it holds
// only while bytes are in hand: on a *net.TCPConn (on Linux) it first
// waits, without a buffer, until the socket is readable, so an idle
// connection holds none. A TLS connection cannot be waited on that way
// (it may hold decrypted bytes): its buffer is kept.
type idleReader struct {
	src net.Conn
	rc  syscall.RawConn // of src; nil: the buffer is kept
	bp  *[]byte
}

// read reads once from src; the bytes are valid until the next read or
// release. A read deadline ends the wait as it ends a read.
func (r *idleReader) read(src net.Conn) ([]byte, error) {
	if src != r.src {
		r.src, r.rc = src, rawConnOf(src)
	}
	if r.rc != nil {
		r.release()
		if err := r.rc.Read(peekReady); err != nil {
			return nil, err
		}
	}
	if r.bp == nil {
		r.bp = idleBufPool.Get().(*[]byte)
	}
	n, err := src.Read(*r.bp)
	return (*r.bp)[:n], err
}

// release gives the buffer back.
func (r *idleReader) release() {
	if r.bp != nil {
		idleBufPool.Put(r.bp)
		r.bp = nil
	}
}
