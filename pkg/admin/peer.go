package admin

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// Peer calls (a replica asking its peers for a fleet-wide answer) carry
// neither the caller's credentials nor a reusable secret. Each call carries
// a peer credential: an HMAC, under a key every replica shares, over the
// address dialled, the method, the role of the caller the call is made
// for, a time and a nonce. The peer checks that it is the address named,
// so whatever is listed under gateways/ learns nothing it can use against
// a real replica, and a read-only caller's fan-out stays read-only.

// PeerHeader is the metadata key of a peer credential.
const PeerHeader = "x-devgate-peer"

// OnBehalfHeader caps the role of a call made for another caller when no
// peer key is configured (mTLS peers): it can only lower a role.
const OnBehalfHeader = "x-devgate-on-behalf-of"

// PeerSkew is how far a peer credential's time may be from the receiver's
// clock; nonces are remembered this long, so a credential is good once.
const PeerSkew = 30 * time.Second

// maxPeerNonces bounds the replay cache; only valid credentials enter it.
const maxPeerNonces = 100000

// maxPeerCredential bounds the header a peer may send.
const maxPeerCredential = 1024

// Reasons a peer credential is refused.
var (
	ErrPeerMalformed = errors.New("peer credential malformed")
	ErrPeerSignature = errors.New("peer credential signature does not verify")
	ErrPeerAudience  = errors.New("peer credential names another address")
	ErrPeerMethod    = errors.New("peer credential is for another method")
	ErrPeerExpired   = errors.New("peer credential out of its time window")
	ErrPeerReplayed  = errors.New("peer credential replayed")
	ErrPeerNoKey     = errors.New("peer credentials are not accepted: no peer key configured")
)

// PeerKey signs and verifies peer credentials. Self is the address peers
// dial this replica at (what it registers under gateways/).
type PeerKey struct {
	key  []byte
	self string

	mu   sync.Mutex
	seen map[string]time.Time // nonce -> when it may be forgotten
}

// NewPeerKey returns a key from a secret shared by the replicas.
func NewPeerKey(secret []byte, self string) *PeerKey {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("devgate admin peer key v1"))
	return &PeerKey{key: m.Sum(nil), self: self, seen: map[string]time.Time{}}
}

// peerClaim is what a peer credential says.
type peerClaim struct {
	Aud    string `json:"aud"` // the address dialled
	Method string `json:"m"`
	Role   Role   `json:"r"` // of the caller the call is made for
	For    string `json:"p"` // that caller's principal, for audit lines
	TS     int64  `json:"t"` // unix milliseconds
	Nonce  string `json:"n"`
}

func (k *PeerKey) mac(b []byte) []byte {
	m := hmac.New(sha256.New, k.key)
	m.Write(b)
	return m.Sum(nil)
}

// sign returns a credential for one call of method to aud for c.
func (k *PeerKey) sign(aud, method string, c Caller, now time.Time) string {
	var nonce [12]byte
	rand.Read(nonce[:])
	b, _ := json.Marshal(peerClaim{Aud: aud, Method: method, Role: c.Role, For: truncate(c.Principal, 128),
		TS: now.UnixMilli(), Nonce: base64.RawURLEncoding.EncodeToString(nonce[:])})
	enc := base64.RawURLEncoding
	return enc.EncodeToString(b) + "." + enc.EncodeToString(k.mac(b))
}

// verify checks a credential received for method and returns the caller
// it was made for.
func (k *PeerKey) verify(v, method string, now time.Time) (Caller, error) {
	body, sig, ok := strings.Cut(v, ".")
	if !ok || len(v) > maxPeerCredential {
		return Caller{}, ErrPeerMalformed
	}
	enc := base64.RawURLEncoding
	b, err1 := enc.DecodeString(body)
	s, err2 := enc.DecodeString(sig)
	if err1 != nil || err2 != nil {
		return Caller{}, ErrPeerMalformed
	}
	if !hmac.Equal(s, k.mac(b)) {
		return Caller{}, ErrPeerSignature
	}
	var c peerClaim
	if err := json.Unmarshal(b, &c); err != nil || c.Nonce == "" || (c.Role != RoleRead && c.Role != RoleAdmin) {
		return Caller{}, ErrPeerMalformed
	}
	switch t := time.UnixMilli(c.TS); {
	case c.Aud != k.self:
		return Caller{}, fmt.Errorf("%w: %q, this replica is %q", ErrPeerAudience, c.Aud, k.self)
	case c.Method != method:
		return Caller{}, ErrPeerMethod
	case t.Before(now.Add(-PeerSkew)) || t.After(now.Add(PeerSkew)):
		return Caller{}, ErrPeerExpired
	}
	if err := k.remember(c.Nonce, now); err != nil {
		return Caller{}, err
	}
	return Caller{Role: c.Role, Principal: "peer for " + c.For}, nil
}

// remember records a nonce; a second use within the window is a replay.
func (k *PeerKey) remember(nonce string, now time.Time) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, ok := k.seen[nonce]; ok {
		return ErrPeerReplayed
	}
	if len(k.seen) >= maxPeerNonces {
		for n, until := range k.seen {
			if now.After(until) {
				delete(k.seen, n)
			}
		}
		if len(k.seen) >= maxPeerNonces {
			return fmt.Errorf("%w: too many recent peer calls", ErrPeerReplayed)
		}
	}
	k.seen[nonce] = now.Add(2 * PeerSkew)
	return nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// PeerCallOptions return the dial options of a peer connection to addr:
// each call carries a credential from k for the caller in its context
// (CallerFrom; a replica's own calls are read-only), or without k, the
// caller's role as a cap. Only addresses in allowed are dialled (none:
// any).
func PeerCallOptions(k *PeerKey, addr string, allowed []netip.Prefix) []grpc.DialOption {
	tag := func(ctx context.Context, method string) context.Context {
		c, ok := CallerFrom(ctx)
		if !ok {
			c = Caller{Role: RoleRead, Principal: "gateway"}
		}
		if k == nil {
			return metadata.AppendToOutgoingContext(ctx, OnBehalfHeader, c.Role.String())
		}
		return metadata.AppendToOutgoingContext(ctx, PeerHeader, k.sign(addr, method, c, time.Now()))
	}
	return []grpc.DialOption{
		grpc.WithUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, inv grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			return inv(tag(ctx, method), method, req, reply, cc, opts...)
		}),
		grpc.WithStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, st grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			return st(tag(ctx, method), desc, cc, method, opts...)
		}),
		grpc.WithContextDialer(peerDialer(allowed)),
	}
}

// ErrPeerNetwork: a gateways/ entry names an address outside the allowed set.
var ErrPeerNetwork = errors.New("outside admin.peerNetworks")

// peerDialer dials addr only at addresses in allowed (after resolving a
// name), so a key written under gateways/ cannot point this replica
// anywhere else.
func peerDialer(allowed []netip.Prefix) func(context.Context, string) (net.Conn, error) {
	var d net.Dialer
	return func(ctx context.Context, addr string) (net.Conn, error) {
		if len(allowed) == 0 {
			return d.DialContext(ctx, "tcp", addr)
		}
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		if err != nil {
			return nil, err
		}
		for _, ip := range ips {
			ip = ip.Unmap()
			for _, p := range allowed {
				if p.Contains(ip) {
					return d.DialContext(ctx, "tcp", net.JoinHostPort(ip.String(), port))
				}
			}
		}
		return nil, fmt.Errorf("peer %s: %w", addr, ErrPeerNetwork)
	}
}
