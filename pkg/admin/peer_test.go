package admin

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

const statusMethod = "/devgate.admin.v1.Admin/LocalStatus"

func TestPeerCredential(t *testing.T) {
	now := time.Now()
	a := NewPeerKey([]byte("shared-secret-0123456789"), "10.0.0.1:9090")
	b := NewPeerKey([]byte("shared-secret-0123456789"), "10.0.0.2:9090")
	other := NewPeerKey([]byte("another-secret-0123456789"), "10.0.0.2:9090")
	reader := Caller{Role: RoleRead, Principal: "token token-read"}

	cred := a.sign("10.0.0.2:9090", statusMethod, reader, now)
	c, err := b.verify(cred, statusMethod, now)
	if err != nil || c.Role != RoleRead || c.Principal != "peer for token token-read" {
		t.Fatalf("verify = %+v, %v", c, err)
	}
	for _, tc := range []struct {
		name   string
		key    *PeerKey
		cred   string
		method string
		at     time.Time
		want   error
	}{
		{"replayed", b, cred, statusMethod, now, ErrPeerReplayed},
		{"another address", a, b.sign("10.0.0.2:9090", statusMethod, reader, now), statusMethod, now, ErrPeerAudience},
		{"another method", b, a.sign("10.0.0.2:9090", statusMethod, reader, now), "/devgate.admin.v1.Admin/DrainGateway", now, ErrPeerMethod},
		{"too old", b, a.sign("10.0.0.2:9090", statusMethod, reader, now.Add(-time.Minute)), statusMethod, now, ErrPeerExpired},
		{"another key", other, a.sign("10.0.0.2:9090", statusMethod, reader, now), statusMethod, now, ErrPeerSignature},
		{"role raised", b, raiseRole(t, a.sign("10.0.0.2:9090", statusMethod, reader, now)), statusMethod, now, ErrPeerSignature},
		{"garbage", b, "not.a-credential!", statusMethod, now, ErrPeerMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := tc.key.verify(tc.cred, tc.method, tc.at); !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

// raiseRole edits the claim's role to admin and keeps the signature.
func raiseRole(t *testing.T, cred string) string {
	t.Helper()
	body, sig, _ := cutDot(cred)
	b, err := b64.DecodeString(body)
	if err != nil {
		t.Fatal(err)
	}
	b = []byte(replaceOnce(string(b), `"r":1`, `"r":2`))
	return b64.EncodeToString(b) + "." + sig
}

func FuzzPeerVerify(f *testing.F) {
	k := NewPeerKey([]byte("shared-secret-0123456789"), "10.0.0.2:9090")
	f.Add(k.sign("10.0.0.2:9090", statusMethod, Caller{Role: RoleRead}, time.Now()))
	f.Add("a.b")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := k.verify(s, statusMethod, time.Now())
		if err == nil && c.Role != RoleRead && c.Role != RoleAdmin {
			t.Fatalf("accepted role %v", c.Role)
		}
	})
}

var b64 = base64.RawURLEncoding

func cutDot(s string) (string, string, bool) { return strings.Cut(s, ".") }

func replaceOnce(s, old, new string) string { return strings.Replace(s, old, new, 1) }

// TestAuthPeerRoles: a peer credential gives the role it was signed for,
// only on the calls replicas make to each other; the on-behalf header
// only lowers a role.
func TestAuthPeerRoles(t *testing.T) {
	self := "10.0.0.2:9090"
	key := NewPeerKey([]byte("shared-secret-0123456789"), self)
	a := &Auth{Tokens: map[string]Role{adminToken: RoleAdmin}, Peer: key}
	const drainGW, drainBackend = adminService + "DrainGateway", adminService + "DrainBackend"
	call := func(method string, kv ...string) codes.Code {
		_, _, err := a.check(metadata.NewIncomingContext(context.Background(), metadata.Pairs(kv...)), method)
		return status.Code(err)
	}
	signed := func(method string, r Role) string { return key.sign(self, method, Caller{Role: r}, time.Now()) }
	for _, tc := range []struct {
		name   string
		method string
		kv     []string
		want   codes.Code
	}{
		{"peer for an admin", drainGW, []string{PeerHeader, signed(drainGW, RoleAdmin)}, codes.OK},
		{"peer for a reader", drainGW, []string{PeerHeader, signed(drainGW, RoleRead)}, codes.PermissionDenied},
		{"peer on a non-peer call", drainBackend, []string{PeerHeader, signed(drainBackend, RoleAdmin)}, codes.PermissionDenied},
		{"peer credential beside a token", drainGW, []string{"authorization", "Bearer " + adminToken, PeerHeader, "forged.x"}, codes.Unauthenticated},
		{"admin token capped to read", drainBackend, []string{"authorization", "Bearer " + adminToken, OnBehalfHeader, "read"}, codes.PermissionDenied},
		{"cap cannot raise", drainBackend, []string{OnBehalfHeader, "admin"}, codes.Unauthenticated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := call(tc.method, tc.kv...); got != tc.want {
				t.Fatalf("code %v, want %v", got, tc.want)
			}
		})
	}
}
