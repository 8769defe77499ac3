package admin

import (
	"context"
	"crypto/subtle"
	"crypto/x509"
	"errors"
	"strings"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Role is what a caller may do.
type Role int

const (
	RoleNone  Role = iota
	RoleRead       // list, lookup, status
	RoleAdmin      // also drain, undrain, rebalance, drain a gateway
)

func (r Role) String() string {
	switch r {
	case RoleRead:
		return "read"
	case RoleAdmin:
		return "admin"
	}
	return "none"
}

func parseRole(s string) Role {
	switch s {
	case "read":
		return RoleRead
	case "admin":
		return RoleAdmin
	}
	return RoleNone
}

// ReadOnlyOU marks a client certificate as read-only: a verified client
// certificate is admin unless its subject has this organizational unit.
const ReadOnlyOU = "devgate-read"

// Caller is who makes a call: the role granted and a principal for audit
// lines (token name, certificate CN, or the caller a peer call is for).
type Caller struct {
	Role      Role
	Principal string
}

type callerKey struct{}

// WithCaller returns ctx carrying c; peer calls made under it are made for c.
func WithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// CallerFrom returns the caller the interceptors put in ctx.
func CallerFrom(ctx context.Context) (Caller, bool) {
	c, ok := ctx.Value(callerKey{}).(Caller)
	return c, ok
}

// Auth decides the role of each caller from a bearer token, a verified
// client certificate (mTLS) or a peer credential, and writes the audit log.
type Auth struct {
	Tokens map[string]Role   // token -> role
	Names  map[string]string // token -> name in audit lines (optional)
	// Open gives every caller the admin role: for loopback-only dev mode
	// or an explicit insecure flag.
	Open bool
	// Peer verifies peer credentials; nil: none are accepted.
	Peer *PeerKey
	// Audit, if set, gets one line per admin call (a mutation) and one per
	// refused call, with the principal.
	Audit *zap.Logger
	// OnRefused, if set, counts a refused call by reason.
	OnRefused func(reason string)
}

// peerMethods are the calls replicas make to each other; a peer
// credential is good for nothing else.
var peerMethods = map[string]bool{"LocalStatus": true, "LocalRebalance": true, "DrainGateway": true, "UndrainGateway": true,
	"LocalConnections": true, "LocalKick": true}

const adminService = "/devgate.admin.v1.Admin/"

// required is the role each method needs; methods of other services
// (health, reflection) need none.
func required(fullMethod string) Role {
	m, ok := strings.CutPrefix(fullMethod, adminService)
	if !ok {
		return RoleNone
	}
	switch m {
	case "ListBackends", "Lookup", "ListGateways", "LocalStatus",
		"FindDevice", "ListConnections", "LocalConnections":
		return RoleRead
	}
	return RoleAdmin
}

// refusal is a refused call: the status for the caller, a reason to count.
type refusal struct {
	st     *status.Status
	reason string
}

func (r *refusal) Error() string { return r.st.Message() }

// GRPCStatus makes a refusal a gRPC status error.
func (r *refusal) GRPCStatus() *status.Status { return r.st }

func refuse(c codes.Code, reason, msg string) error {
	return &refusal{status.New(c, msg), reason}
}

// identify returns the caller of a call to method.
func (a *Auth) identify(ctx context.Context, method string) (Caller, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get(PeerHeader); len(v) > 0 {
		return a.peerCaller(v, method)
	}
	if a.Open {
		return capRole(Caller{RoleAdmin, "open"}, md), nil
	}
	c := Caller{Role: RoleNone, Principal: "anonymous"}
	for _, v := range md.Get("authorization") {
		tok, ok := strings.CutPrefix(v, "Bearer ")
		if !ok {
			continue
		}
		for t, r := range a.Tokens { // constant time per token
			if subtle.ConstantTimeCompare([]byte(t), []byte(tok)) == 1 && r > c.Role {
				c = Caller{r, "token " + a.Names[t]}
			}
		}
	}
	if p, ok := peer.FromContext(ctx); ok {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.VerifiedChains) > 0 {
			cert := ti.State.VerifiedChains[0][0]
			if r := certRole(cert); r > c.Role {
				c = Caller{r, "cert CN=" + cert.Subject.CommonName}
			}
		}
	}
	return capRole(c, md), nil
}

// capRole lowers c's role to what an on-behalf-of header says.
func capRole(c Caller, md metadata.MD) Caller {
	for _, v := range md.Get(OnBehalfHeader) {
		if r := parseRole(v); r < c.Role {
			c.Role = r
			c.Principal += " on behalf of role " + r.String()
		}
	}
	return c
}

func (a *Auth) peerCaller(v []string, method string) (Caller, error) {
	if a.Peer == nil {
		return Caller{}, refuse(codes.Unauthenticated, "peer_no_key", ErrPeerNoKey.Error())
	}
	m, _ := strings.CutPrefix(method, adminService)
	if !peerMethods[m] {
		return Caller{}, refuse(codes.PermissionDenied, "peer_method", "a peer credential serves only the calls replicas make to each other")
	}
	if len(v) != 1 {
		return Caller{}, refuse(codes.Unauthenticated, "peer_malformed", ErrPeerMalformed.Error())
	}
	c, err := a.Peer.verify(v[0], method, time.Now())
	if err != nil {
		return Caller{}, refuse(codes.Unauthenticated, peerReason(err), err.Error())
	}
	return c, nil
}

func peerReason(err error) string {
	for _, r := range []struct {
		err    error
		reason string
	}{{ErrPeerSignature, "peer_signature"}, {ErrPeerAudience, "peer_audience"}, {ErrPeerMethod, "peer_method"},
		{ErrPeerExpired, "peer_expired"}, {ErrPeerReplayed, "peer_replayed"}} {
		if errors.Is(err, r.err) {
			return r.reason
		}
	}
	return "peer_malformed"
}

func certRole(c *x509.Certificate) Role {
	for _, ou := range c.Subject.OrganizationalUnit {
		if ou == ReadOnlyOU {
			return RoleRead
		}
	}
	return RoleAdmin
}

// check returns ctx carrying the caller, or the refusal.
func (a *Auth) check(ctx context.Context, method string) (context.Context, Caller, error) {
	need := required(method)
	if need == RoleNone {
		return ctx, Caller{}, nil
	}
	c, err := a.identify(ctx, method)
	switch {
	case err != nil:
	case c.Role == RoleNone:
		err = refuse(codes.Unauthenticated, "unauthenticated", "a bearer token or a client certificate is required")
	case c.Role < need:
		err = refuse(codes.PermissionDenied, "permission_denied", "this call needs the admin role")
	}
	if err != nil {
		a.refused(ctx, method, c, err)
		return ctx, c, err
	}
	return WithCaller(ctx, c), c, nil
}

func (a *Auth) refused(ctx context.Context, method string, c Caller, err error) {
	var r *refusal
	reason := "unknown"
	if errors.As(err, &r) {
		reason = r.reason
	}
	if a.OnRefused != nil {
		a.OnRefused(reason)
	}
	if a.Audit != nil {
		a.Audit.Warn("admin call refused", zap.String("method", method), zap.String("principal", c.Principal),
			zap.String("remote", remote(ctx)), zap.String("reason", reason), zap.Error(err))
	}
}

// audited logs an admin call (a mutation) once it has an outcome.
func (a *Auth) audited(ctx context.Context, method string, c Caller, req any, err error) {
	if a.Audit == nil || required(method) != RoleAdmin {
		return
	}
	fields := []zap.Field{zap.String("method", method), zap.String("principal", c.Principal),
		zap.String("remote", remote(ctx)), zap.String("code", status.Code(err).String())}
	if s, ok := req.(interface{ GetId() string }); ok {
		fields = append(fields, zap.String("target", s.GetId()))
	}
	if err != nil {
		fields = append(fields, zap.Error(err))
	}
	a.Audit.Info("admin mutation", fields...)
}

func remote(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}

// ServerOptions returns the interceptors that enforce a and audit calls.
func (a *Auth) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.ChainUnaryInterceptor(a.UnaryInterceptor()), grpc.ChainStreamInterceptor(a.StreamInterceptor())}
}

// UnaryInterceptor enforces a and audits unary calls; the JSON API
// (api.go) runs the same one.
func (a *Auth) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		ctx, c, err := a.check(ctx, info.FullMethod)
		if err != nil {
			return nil, err
		}
		resp, err := h(ctx, req)
		a.audited(ctx, info.FullMethod, c, req, err)
		return resp, err
	}
}

// StreamInterceptor enforces a and audits streaming calls.
func (a *Auth) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		ctx, c, err := a.check(ss.Context(), info.FullMethod)
		if err != nil {
			return err
		}
		err = h(srv, &callerStream{ss, ctx})
		a.audited(ctx, info.FullMethod, c, nil, err)
		return err
	}
}

// callerStream is a server stream whose context carries the caller.
type callerStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *callerStream) Context() context.Context { return s.ctx }
