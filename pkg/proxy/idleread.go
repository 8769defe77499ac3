package proxy

import (
	"net"
	"sync"
	"syscall"
)

// idleReader reads a connection into a pooled buffer that it holds only
// while bytes flow: on a *net.TCPConn (on Linux), after a read that did not
// fill the buffer, it gives the buffer back and waits, without one, until
// the socket is readable again, so an idle connection holds none. A TLS
// connection cannot be waited on that way (it may hold decrypted bytes):
// it keeps a smaller buffer for good.
type idleReader struct {
	src  net.Conn
	rc   syscall.RawConn // of src; nil: the buffer is kept
	bp   *[]byte
	more bool // the last read filled the buffer: read again without waiting
}

// moveBufSize is the buffer of a connection that idleReader can wait on.
const moveBufSize = 16 << 10

var moveBufPool = sync.Pool{New: func() any { b := make([]byte, moveBufSize); return &b }}

// read reads once from src; the bytes are valid until the next read or
// release. A read deadline ends the wait as it ends a read.
func (r *idleReader) read(src net.Conn) ([]byte, error) {
	if src != r.src {
		r.release()
		r.src, r.rc, r.more = src, rawConnOf(src), false
	}
	if r.rc != nil && !r.more {
		r.release()
		if err := r.rc.Read(peekReady); err != nil {
			return nil, err
		}
	}
	if r.bp == nil {
		if r.rc != nil {
			r.bp = moveBufPool.Get().(*[]byte)
		} else {
			r.bp = idleBufPool.Get().(*[]byte)
		}
	}
	n, err := src.Read(*r.bp)
	r.more = n == len(*r.bp) && err == nil
	return (*r.bp)[:n], err
}

// release gives the buffer back.
func (r *idleReader) release() {
	if r.bp == nil {
		return
	}
	if len(*r.bp) == moveBufSize {
		moveBufPool.Put(r.bp)
	} else {
		idleBufPool.Put(r.bp)
	}
	r.bp = nil
}
