package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	flag "github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	adminv1 "github.com/devgate/devgate/api/devgate/admin/v1"
)

// errInterrupted means ctrl-C; the verb has said what it left behind.
var errInterrupted = errors.New("interrupted")

// ctlFlags are the global flags; every verb accepts them too.
type ctlFlags struct {
	addr, token, cacert, cert, key string
	insecure, json                 bool
	timeout                        time.Duration
}

func (g *ctlFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&g.addr, "addr", "", "admin gRPC address of any gateway (default $DEVGATE_ADMIN_ADDR, else 127.0.0.1:9090)")
	fs.StringVar(&g.token, "token", "", "bearer token (default $DEVGATE_TOKEN, which keeps it out of ps)")
	fs.StringVar(&g.cacert, "cacert", "", "CA certificate (PEM) verifying the admin port; turns TLS on")
	fs.StringVar(&g.cert, "cert", "", "client certificate (PEM) for mTLS; turns TLS on")
	fs.StringVar(&g.key, "key", "", "client key (PEM) for mTLS")
	fs.BoolVar(&g.insecure, "insecure", false, "plaintext; the default without --cacert/--cert")
	fs.DurationVar(&g.timeout, "timeout", 10*time.Second, "timeout of each call (for rebalance: the longest silence of the stream)")
	fs.BoolVar(&g.json, "json", false, "print one JSON document (proto field names, 64-bit integers as numbers); progress goes to stderr")
}

// resolve fills defaults from the environment and checks combinations.
func (g *ctlFlags) resolve() error {
	if g.addr == "" {
		g.addr = os.Getenv("DEVGATE_ADMIN_ADDR")
	}
	if g.addr == "" {
		g.addr = "127.0.0.1:9090"
	}
	if g.token == "" {
		g.token = os.Getenv("DEVGATE_TOKEN")
	}
	switch {
	case (g.cert == "") != (g.key == ""):
		return usagef("--cert and --key go together")
	case g.insecure && g.tls():
		return usagef("--insecure contradicts --cacert/--cert")
	case g.timeout <= 0:
		return usagef("--timeout must be positive")
	}
	return nil
}

func (g *ctlFlags) tls() bool { return g.cacert != "" || g.cert != "" }

// dial is lazy (grpc.NewClient): an unreachable address shows up as
// Unavailable on the first call.
func (g *ctlFlags) dial() (*grpc.ClientConn, error) {
	creds := insecure.NewCredentials()
	if g.tls() {
		cfg, err := clientTLS(g.cacert, g.cert, g.key)
		if err != nil {
			return nil, fmt.Errorf("admin %w", err)
		}
		creds = credentials.NewTLS(cfg)
	}
	return grpc.NewClient(g.addr, grpc.WithTransportCredentials(creds), grpc.WithUserAgent("devgate-ctl/"+version))
}

// loopback reports whether addr names this host, where plaintext is fine.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return host == "localhost" || ip != nil && ip.IsLoopback()
}

// ctlRun is what a verb works with.
type ctlRun struct {
	ctlFlags
	ctx      context.Context // ends on ctrl-C
	out      io.Writer       // results
	progress io.Writer       // progress lines: stderr under --json, so stdout stays one document
	errw     io.Writer
	admin    adminv1.AdminClient
}

// auth adds the bearer token; outgoing metadata rather than per-RPC
// credentials, which gRPC refuses over plaintext.
func (c *ctlRun) auth(ctx context.Context) context.Context {
	if c.token == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+c.token)
}

// call is the context of one unary call.
func (c *ctlRun) call() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(c.ctx, c.timeout)
	return c.auth(ctx), cancel
}

// explain turns a gRPC status into what an operator can act on.
func (c *ctlRun) explain(err error) string {
	st, ok := status.FromError(err)
	if !ok {
		return err.Error()
	}
	switch st.Code() {
	case codes.Unauthenticated:
		return "not authenticated: pass --token or a client certificate"
	case codes.PermissionDenied:
		return "permission denied: this needs the admin role"
	case codes.Unavailable:
		if strings.HasPrefix(st.Message(), "etcd: ") { // the gateway answered; etcd did not
			return fmt.Sprintf("etcd unavailable (reported by the gateway at %s; nothing changed): %s", c.addr, st.Message())
		}
		return fmt.Sprintf("cannot reach %s: %s", c.addr, st.Message())
	case codes.DeadlineExceeded:
		return fmt.Sprintf("%s did not answer within %s (--timeout)", c.addr, c.timeout)
	case codes.NotFound:
		return "not found: " + st.Message()
	case codes.InvalidArgument:
		return "invalid request: " + st.Message()
	case codes.FailedPrecondition:
		return "not possible on this gateway: " + st.Message()
	case codes.Unimplemented:
		return fmt.Sprintf("%s does not serve this call (not a devgate admin port, or an older version): %s", c.addr, st.Message())
	}
	return fmt.Sprintf("%s: %s", st.Code(), st.Message())
}

// retryable errors do not end a --wait: the next poll may get through.
func retryable(err error) bool {
	c := status.Code(err)
	return c == codes.Unavailable || c == codes.DeadlineExceeded
}
