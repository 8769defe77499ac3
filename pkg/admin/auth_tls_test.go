package admin

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	adminv1 "github.com/devgate/devgate/api/devgate/admin/v1"

	"github.com/devgate/devgate/internal/testkit"
)

// stubAdmin answers the calls the auth tests make; the auth layer runs
// before it.
type stubAdmin struct {
	adminv1.UnimplementedAdminServer
}

func (stubAdmin) DrainBackend(context.Context, *adminv1.DrainBackendRequest) (*adminv1.DrainBackendResponse, error) {
	return &adminv1.DrainBackendResponse{}, nil
}

func (stubAdmin) ListBackends(context.Context, *adminv1.ListBackendsRequest) (*adminv1.ListBackendsResponse, error) {
	return &adminv1.ListBackendsResponse{}, nil
}

func TestTLSClientCertRoles(t *testing.T) {
	ca := testkit.NewCA(t, "devgate test CA")
	other := testkit.NewCA(t, "other CA")
	serverCert := testkit.Issue(t, &ca, "server", nil, net.IPv4(127, 0, 0, 1))
	adminCert := testkit.Issue(t, &ca, "ops-client", []string{"ops"}, nil)
	readCert := testkit.Issue(t, &ca, "read-client", []string{ReadOnlyOU}, nil)
	strangerCert := testkit.Issue(t, &other, "stranger", []string{"ops"}, nil)

	pool := x509.NewCertPool()
	pool.AddCert(ca.TLS.Leaf)

	opts := append([]grpc.ServerOption{grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{serverCert.TLS},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    pool,
	}))}, (&Auth{Tokens: map[string]Role{}}).ServerOptions()...)
	srv := grpc.NewServer(opts...)
	adminv1.RegisterAdminServer(srv, stubAdmin{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(lis) }()
	t.Cleanup(func() { srv.Stop(); <-done })

	client := func(t *testing.T, certs ...tls.Certificate) adminv1.AdminClient {
		t.Helper()
		conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
			RootCAs:      pool,
			Certificates: certs,
		})))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return adminv1.NewAdminClient(conn)
	}
	drain := func(c adminv1.AdminClient) error {
		_, err := c.DrainBackend(ctx5(t), &adminv1.DrainBackendRequest{Id: "b1"})
		return err
	}
	list := func(c adminv1.AdminClient) error {
		_, err := c.ListBackends(ctx5(t), &adminv1.ListBackendsRequest{})
		return err
	}

	t.Run("admin cert", func(t *testing.T) {
		c := client(t, adminCert.TLS)
		if err := drain(c); err != nil {
			t.Fatalf("DrainBackend: %v", err)
		}
		if err := list(c); err != nil {
			t.Fatalf("ListBackends: %v", err)
		}
	})
	t.Run("read-only cert", func(t *testing.T) {
		c := client(t, readCert.TLS)
		if err := list(c); err != nil {
			t.Fatalf("ListBackends: %v", err)
		}
		if err := drain(c); status.Code(err) != codes.PermissionDenied {
			t.Fatalf("DrainBackend: got %v, want PermissionDenied", err)
		}
	})
	t.Run("no client cert", func(t *testing.T) {
		c := client(t)
		if err := list(c); status.Code(err) != codes.Unauthenticated {
			t.Fatalf("ListBackends: got %v, want Unauthenticated", err)
		}
		if err := drain(c); status.Code(err) != codes.Unauthenticated {
			t.Fatalf("DrainBackend: got %v, want Unauthenticated", err)
		}
	})
	t.Run("cert from another CA", func(t *testing.T) {
		c := client(t, strangerCert.TLS)
		if err := drain(c); err == nil {
			t.Fatal("DrainBackend with a certificate from another CA succeeded")
		}
		if err := list(c); err == nil {
			t.Fatal("ListBackends with a certificate from another CA succeeded")
		}
	})
}

func TestRequiredRoles(t *testing.T) {
	read := map[string]bool{"ListBackends": true, "Lookup": true, "ListGateways": true, "LocalStatus": true,
		"FindDevice": true, "ListConnections": true, "LocalConnections": true}
	svc := "/" + adminv1.Admin_ServiceDesc.ServiceName + "/"
	var names []string
	for _, m := range adminv1.Admin_ServiceDesc.Methods {
		names = append(names, m.MethodName)
	}
	for _, s := range adminv1.Admin_ServiceDesc.Streams {
		names = append(names, s.StreamName)
	}
	if len(names) != 15 { // KickDevice and LocalKick (admin role) are the 14th and 15th
		t.Errorf("Admin service has %d methods, want 15: update this test", len(names))
	}
	for _, n := range names {
		want := RoleAdmin
		if read[n] {
			want = RoleRead
			delete(read, n)
		}
		if got := required(svc + n); got != want {
			t.Errorf("required(%q) = %v, want %v", svc+n, got, want)
		}
	}
	for n := range read {
		t.Errorf("read method %s is not in Admin_ServiceDesc", n)
	}
	if got := required("/grpc.health.v1.Health/Check"); got != RoleNone {
		t.Errorf("required(health check) = %v, want RoleNone", got)
	}
}
