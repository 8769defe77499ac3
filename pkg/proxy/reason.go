package proxy

// Reason is why a connection ended, as counted in Stats.Closed and
// exported by pkg/metrics. A connection is refused before it is routed and
// closed after; each is counted once (Proxy.count).
type Reason string

// Reasons a connection is refused or ends, as counted in Stats.Closed. Bad
// input from the preread carries the frame package's reason instead (see
// frame.Reason): bad_header, too_large, no_key, key_too_long, not_json,
// too_many_frames, preread_cap, bad_key, dup_key.
const (
	ReasonMaxConns       Reason = "max_conns"        // refused: the connection limit was reached
	ReasonMaxConnsPerIP  Reason = "max_conns_per_ip" // refused: the source address holds its limit
	ReasonRateLimited    Reason = "rate_limited"     // refused: the source address opens connections too fast
	ReasonProxyUntrusted Reason = "proxy_untrusted"  // a PROXY header from an address not trusted to send one
	ReasonProxyHeader    Reason = "proxy_header"     // a missing or malformed PROXY header from a trusted address
	ReasonTLSHandshake   Reason = "tls_handshake"    // the TLS handshake failed or timed out
	ReasonIdleTimeout    Reason = "idle_timeout"     // proxied; nothing flowed either way for the idle timeout
	ReasonShutdown       Reason = "shutdown"         // closed by Shutdown or Close
	ReasonEmpty          Reason = "empty"            // client closed before sending a byte (LB health checks)
	ReasonClientGone     Reason = "client_gone"      // client closed or reset in the middle of the first frame
	ReasonPrereadTimeout Reason = "preread_timeout"  // no key frame within the preread deadline
	ReasonReadError      Reason = "read_error"       // other socket error while prereading
	ReasonNoBackends     Reason = "no_backends"      // the ring is empty
	ReasonDialFailed     Reason = "dial_failed"      // every owner tried refused or timed out
	ReasonBackendWrite   Reason = "backend_write"    // the backend took the connection but not the preread bytes
	ReasonClientClosed   Reason = "client_closed"    // proxied; the client ended it
	ReasonBackendClosed  Reason = "backend_closed"   // proxied; the backend ended it
	ReasonReplaced       Reason = "replaced"         // proxied; the same device logged in again on this replica
	ReasonEvicted        Reason = "evicted"          // proxied; closed by Evict: "evicted_<cause>" (drain, rebalance...)
	ReasonKicked         Reason = "kicked"           // proxied; closed by an operator (KickDevice)
)

// Reasons a half-closed pair ends: nothing moved for ClientFinTimeout after
// the device's FIN, or for ServerFinTimeout after the backend's.
const (
	ReasonClientFinTimeout Reason = "client_fin_timeout"
	ReasonServerFinTimeout Reason = "server_fin_timeout"
)

// Cause is why Evict closed a connection: it is counted as
// "evicted_<cause>".
type Cause string

// The causes devgate itself evicts for.
const (
	CauseDrain        Cause = "drain"         // a backend is drained (ctl drain)
	CauseRebalance    Cause = "rebalance"     // a device's owner moved (ctl rebalance)
	CauseGatewayDrain Cause = "gateway_drain" // this replica is drained (ctl drain-gateway)
	CauseShutdown     Cause = "shutdown"      // this replica is stopping, paced before Shutdown cuts the rest
)

// Evicted is the reason a connection evicted for cause is closed with.
func Evicted(cause Cause) Reason { return ReasonEvicted + "_" + Reason(cause) }

// ReasonAdmissionTimeout: refused after waiting Admission.MaxWait for its
// backend's turn (login pacing, pacing.go).
const ReasonAdmissionTimeout Reason = "admission_timeout"
