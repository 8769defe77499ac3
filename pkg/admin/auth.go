package admin

import (
	"context"
	"crypto/subtle"
	"crypto/x509"
	"strings"

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

// ReadOnlyOU marks a client certificate as read-only: a verified client
// certificate is admin unless its subject has this organizational unit.
const ReadOnlyOU = "devgate-read"

// Auth decides the role of each caller from a bearer token or a verified
// client certificate (mTLS).
type Auth struct {
	Tokens map[string]Role // token -> role
	// Open gives every caller the admin role: for loopback-only dev mode
	// or an explicit insecure flag.
	Open bool
}

// required is the role each method needs; methods of other services
// (health, reflection) need none.
func required(fullMethod string) Role {
	const svc = "/devgate.admin.v1.Admin/"
	m, ok := strings.CutPrefix(fullMethod, svc)
	if !ok {
		return RoleNone
	}
	switch m {
	case "ListBackends", "Lookup", "ListGateways", "LocalStatus":
		return RoleRead
	}
	return RoleAdmin
}

func (a *Auth) role(ctx context.Context) Role {
	if a.Open {
		return RoleAdmin
	}
	role := RoleNone
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		for _, v := range md.Get("authorization") {
			tok, ok := strings.CutPrefix(v, "Bearer ")
			if !ok {
				continue
			}
			for t, r := range a.Tokens { // constant time per token
				if subtle.ConstantTimeCompare([]byte(t), []byte(tok)) == 1 && r > role {
					role = r
				}
			}
		}
	}
	if p, ok := peer.FromContext(ctx); ok {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.VerifiedChains) > 0 {
			if r := certRole(ti.State.VerifiedChains[0][0]); r > role {
				role = r
			}
		}
	}
	return role
}

func certRole(c *x509.Certificate) Role {
	for _, ou := range c.Subject.OrganizationalUnit {
		if ou == ReadOnlyOU {
			return RoleRead
		}
	}
	return RoleAdmin
}

func (a *Auth) check(ctx context.Context, method string) error {
	need := required(method)
	if need == RoleNone {
		return nil
	}
	got := a.role(ctx)
	switch {
	case got == RoleNone:
		return status.Error(codes.Unauthenticated, "a bearer token or a client certificate is required")
	case got < need:
		return status.Error(codes.PermissionDenied, "this call needs the admin role")
	}
	return nil
}

// ServerOptions returns the interceptors that enforce a.
func (a *Auth) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if err := a.check(ctx, info.FullMethod); err != nil {
				return nil, err
			}
			return h(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			if err := a.check(ss.Context(), info.FullMethod); err != nil {
				return err
			}
			return h(srv, ss)
		}),
	}
}

// tokenCreds sends a bearer token on every call, for peer calls.
type tokenCreds struct {
	token  string
	secure bool
}

// TokenCredentials returns per-RPC credentials carrying token. Over
// plaintext they are sent only when insecure is true (loopback tests, dev).
func TokenCredentials(token string, requireTLS bool) credentials.PerRPCCredentials {
	return tokenCreds{token, requireTLS}
}

func (t tokenCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + t.token}, nil
}

func (t tokenCreds) RequireTransportSecurity() bool { return t.secure }
