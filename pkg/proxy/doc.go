// Package proxy is devgate's data plane: it accepts device connections,
// reads the first frame(s) until the device id (the key) is in, routes the
// key on a consistent-hash ring, dials the owning backend (the next owners
// in ring order if it fails) and copies bytes both ways until both sides
// end.
//
// Typical use:
//
//	var p proxy.Proxy
//	p.Source = proxy.NewAtomicRing(r) // or the registry's Watcher
//	l, err := p.Listen(ctx, "tcp", ":9000")
//	if err != nil {
//		return err
//	}
//	go p.Serve(l)
//	...
//	p.Evict("backend-2", 0, proxy.CauseDrain) // move its devices elsewhere
//	p.Shutdown(ctx)                           // stop accepting, wait, then cut
//
// # Two data paths
//
// By default, on Linux, a few epoll loops (one per GOMAXPROCS) own the
// sockets: they accept, read the key frame, dial with non-blocking
// connects and copy through one 64 KiB buffer per loop, so an idle device
// costs its two sockets and under 1 KB of memory, and no goroutine. A
// loop's system calls are raw (package netpoll): they never block, and a
// P marked as in a system call would be retaken by sysmon and handed to
// another thread, a cost HAProxy's threads do not pay. A loop parks in Go's
// netpoller only when it has nothing ready. With
// Proxy.Goroutines (and for the steps the loops do not do: a PROXY
// header from a trusted balancer, TLS on either side, a custom Dial, an
// idle timeout) each connection has a goroutine that does the steps before
// routing and two that copy (splice between TCP sockets).
//
// # Who owns a socket
//
// The goroutine that accepted a socket owns it until it hands the routed
// pair to a loop (handOff); from then on only that loop reads, writes or
// closes it, and everyone else asks the loop to (conn.close posts a kill)
// because an fd number the loop closed may already name another socket.
//
// # Life of a connection
//
// accepted -> admitted (connection cap, per-address limits) -> preread
// (key frame under PrereadTimeout) -> [waiting for the owner's turn, when
// Admission paces it] -> routed (ring lookup, dial, the
// preread bytes sent; a backend that resets before its first byte is a
// failed dial) -> proxied (in the connection table, where Evict and
// Shutdown find it; copying; FIN timeouts bound a half-closed pair) ->
// ended (both sockets closed, counted once under a Reason).
//
// # Reconnect storms
//
// eject.go skips a backend whose dials keep failing (passive ejection, per
// replica, in ring fallback order so every replica agrees); flap.go holds,
// then refuses, a device that logs in too often; notice.go writes a
// configured frame to a device before its eviction, at a frame boundary.
//
// # Reading order
//
// The files follow a connection on the default path: proxy.go (options,
// Shutdown, Stats, Evict), accepting.go (Listen, Serve, stopping and
// resuming accepting), loop_linux.go
// (the loops: wait, dispatch, messages), loop_timer_linux.go (deadlines),
// loop_accept_linux.go, admit.go (admission shared by both paths),
// loop_preread_linux.go (key frame, route, dial), pacing.go and
// loop_pace_linux.go (login pacing: waiting for the backend's turn),
// conn.go, table.go, devices.go (a routed connection and where it is
// kept), loop_copy_linux.go (copy, FIN timeouts, fallback, loopClose) and
// end.go (end, the one teardown and count of both paths).
// The goroutine path is goroutine.go; internal/netpoll holds the epoll set
// and the socket system calls.
//
// # Moving live devices
//
// With Rehome, a drain, a rebalance or a lost backend moves a device to
// its new owner instead of closing it (docs/DESIGN.md, "Moving a live
// device"). rehome.go has the contract, Relocate and the shared check of a
// lost backend (lostprobe.go); loop_move_linux.go the state machine on
// the loops, loop_movelost_linux.go a lost backend's and the deadlines;
// goroutine_move.go, goroutine_movecopy.go and goroutine_movedown.go the
// same on the goroutine path, whose copy then reads into buffers
// (idleread*.go: no buffer while idle) instead of splicing.
//
// # Close reasons
//
// Every accepted connection ends counted exactly once in Stats.Closed under
// a Reason. A connection is refused before it is routed (ReasonMaxConns,
// ReasonMaxConnsPerIP, ReasonRateLimited, the PROXY and TLS reasons,
// ReasonEmpty, ReasonClientGone, ReasonPrereadTimeout, ReasonReadError, the
// frame package's bad-input reasons, ReasonFlapping, ReasonNoBackends,
// ReasonAdmissionTimeout, ReasonDialFailed, ReasonBackendWrite) and closed
// after (ReasonClientClosed,
// ReasonBackendClosed, the FIN and idle timeouts, ReasonReplaced,
// ReasonEvicted with its Cause); ReasonShutdown can be either. A move that
// fails closes the device as without rehome (evicted_<cause>, or
// backend_closed for a lost backend); how each move ended is counted apart
// (Stats.Rehomes).
package proxy
