package proxy

import (
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/devgate/devgate/internal/opt"
)

// Running out of file descriptors must not take the admin port (metrics,
// readiness) and the etcd client down with the device listener: the
// connection cap is lowered at start so that connections leave
// Proxy.FDReserve descriptors of RLIMIT_NOFILE free, and failed accepts
// are logged once per acceptErrLogEvery across every accepting goroutine
// and loop.

// DefaultFDReserve is FDReserve's default: descriptors kept for the admin
// listeners and their clients, etcd connections, logs and the runtime.
const DefaultFDReserve = 128

// acceptErrLogEvery spaces the accept-failure log lines.
const acceptErrLogEvery = 10 * time.Second

// fdsPerConn is what one connection may hold: its two sockets on the
// loops; with goroutines, also a splice pipe (two fds) per direction.
func (p *Proxy) fdsPerConn() int64 {
	if p.loopsCopy() {
		return 2
	}
	return 6
}

// connCapFor is the connection cap: MaxConns, lowered when RLIMIT_NOFILE
// (nofile, 0: unknown) cannot hold that many connections and the reserve.
// It logs why when it lowers it (-1: no cap).
func (p *Proxy) connCapFor(nofile uint64) int64 {
	want := p.maxConns()
	reserve := int64(opt.OrNone(p.FDReserve, DefaultFDReserve))
	if nofile == 0 || p.FDReserve < 0 {
		return want
	}
	budget := max((int64(min(nofile, 1<<40))-reserve)/p.fdsPerConn(), 1)
	if want >= 0 && want <= budget {
		return want
	}
	p.log.Warn("connection cap lowered to keep file descriptors for the admin port and etcd",
		zap.Int64("maxConnections", want), zap.Uint64("nofile", nofile), zap.Int64("reserve", reserve),
		zap.Int64("fdsPerConnection", p.fdsPerConn()), zap.Int64("cap", budget))
	return budget
}

// acceptFailed counts a failed accept and logs it at most once per
// acceptErrLogEvery for the whole proxy.
func (p *Proxy) acceptFailed(err error, pause time.Duration) {
	p.stats.acceptErrors.Add(1)
	n := p.acceptErrs.Add(1)
	now := time.Now().UnixNano()
	last := p.acceptErrLogged.Load()
	if now-last < int64(acceptErrLogEvery) || !p.acceptErrLogged.CompareAndSwap(last, now) {
		return
	}
	p.acceptErrs.Add(-n)
	p.log.Warn("accept failed; retrying", zap.Error(err), zap.Duration("pause", pause),
		zap.Int64("failures", n), zap.Duration("every", acceptErrLogEvery))
}

// acceptLog is the state of acceptFailed.
type acceptLog struct {
	acceptErrs      atomic.Int64 // failures since the last line
	acceptErrLogged atomic.Int64 // unix nanoseconds of the last line
}

// FilesWanted is the RLIMIT_NOFILE that holds MaxConns connections and the
// reserve, for the startup check (0: no cap, nothing to compare).
func (p *Proxy) FilesWanted() uint64 {
	want := p.maxConns()
	if want < 0 {
		return 0
	}
	return uint64(want*p.fdsPerConn() + int64(opt.OrNone(p.FDReserve, DefaultFDReserve)))
}

// ConnsWanted is MaxConns with its default (-1: none).
func (p *Proxy) ConnsWanted() int64 { return p.maxConns() }
