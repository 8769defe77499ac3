package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	adminv1 "github.com/devgate/devgate/api/devgate/admin/v1"
)

// runCtl is `devgate ctl`: it operates the fleet through the admin API of
// any one gateway replica, which answers for all of them.
//
//	devgate ctl --addr gw-1:9090 --token "$T" backends
//	devgate ctl drain netty-3 --deadline 2m --pace 20 --reason "kernel update" --wait
func runCtl(args []string) error {
	if code := ctlMain(args, os.Stdout, os.Stderr); code != 0 {
		os.Exit(code) // messages are printed already; usage errors exit 2
	}
	return nil
}

// ctlMain runs one ctl invocation and returns its exit code: 0, 1 for a
// failed call, 2 for a usage error, 130 when ctrl-C stopped it.
func ctlMain(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return ctlMainCtx(ctx, args, stdout, stderr)
}

// errInterrupted means ctrl-C; the verb has said what it left behind.
var errInterrupted = errors.New("interrupted")

// usageError is a bad command line: exit 2 with the verb's usage.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }

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
	fs.BoolVar(&g.json, "json", false, "print one JSON document (protojson, proto field names); progress goes to stderr")
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

func ctlMainCtx(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var g ctlFlags
	top := flag.NewFlagSet("ctl", flag.ContinueOnError)
	top.SetOutput(stderr)
	g.register(top)
	top.Usage = func() { ctlUsage(stderr, top) }
	if err := top.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	name := top.Arg(0)
	if name == "" || name == "help" && top.NArg() == 1 {
		ctlUsage(stderr, top)
		if name == "" {
			return 2
		}
		return 0
	}
	rest := top.Args()[1:]
	if name == "help" { // help VERB
		name, rest = rest[0], []string{"-h"}
	}
	v := findVerb(name)
	if v == nil {
		fmt.Fprintf(stderr, "devgate ctl: unknown verb %q\n", name)
		ctlUsage(stderr, top)
		return 2
	}
	// own holds the verb's flags alone, for its usage; fs parses those
	// and the global ones (sharing their values) anywhere on the line.
	own := flag.NewFlagSet(name, flag.ContinueOnError)
	own.SetOutput(stderr)
	body := v.setup(own)
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	for _, set := range []*flag.FlagSet{own, top} {
		set.VisitAll(func(f *flag.Flag) { fs.Var(f.Value, f.Name, f.Usage) })
	}
	fs.Usage = func() { verbUsage(stderr, v, own) }
	pos, err := parseInterspersed(fs, rest)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		return 2 // flag has printed the error and the usage
	}
	switch {
	case len(pos) == len(v.args):
	case len(v.args) == 0:
		err = usagef("takes no arguments, got %q", pos)
	default:
		err = usagef("want %s, got %q", strings.Join(v.args, " "), pos)
	}
	if err == nil {
		err = g.resolve()
	}
	if err != nil {
		fmt.Fprintf(stderr, "devgate ctl %s: %v\n", name, err)
		fs.Usage()
		return 2
	}
	conn, err := g.dial()
	if err != nil {
		fmt.Fprintf(stderr, "devgate ctl %s: %v\n", name, err)
		return 1
	}
	defer conn.Close()
	if g.token != "" && !g.tls() && !loopback(g.addr) {
		fmt.Fprintf(stderr, "devgate ctl: warning: sending the token without TLS to %s\n", g.addr)
	}
	c := &ctlRun{ctlFlags: g, ctx: ctx, out: stdout, progress: stdout, errw: stderr, admin: adminv1.NewAdminClient(conn)}
	if g.json {
		c.progress = stderr
	}
	err = body(c, pos)
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "devgate ctl %s: %v\n", name, err)
		fs.Usage()
		return 2
	case errors.Is(err, errInterrupted):
		return 130
	case ctx.Err() != nil:
		fmt.Fprintf(stderr, "devgate ctl %s: interrupted\n", name)
		return 130
	}
	fmt.Fprintf(stderr, "devgate ctl %s: %s\n", name, c.explain(err))
	return 1
}

// parseInterspersed parses flags anywhere among args, as operators type
// them (`drain b1 --wait`), and returns the positional arguments.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(pos, rest...), nil
		}
		pos, args = append(pos, rest[0]), rest[1:]
	}
}

func ctlUsage(w io.Writer, top *flag.FlagSet) {
	fmt.Fprint(w, `usage: devgate ctl [global flags] <verb> [flags]

Operates the fleet through the admin API of any gateway replica.

verbs:
`)
	for _, v := range ctlVerbs() {
		fmt.Fprintf(w, "  %-22s %s\n", strings.Join(append([]string{v.name}, v.args...), " "), v.summary)
	}
	fmt.Fprint(w, "\nglobal flags (also accepted after the verb):\n")
	top.PrintDefaults()
	fmt.Fprint(w, `
exit codes: 0 ok, 1 the call failed, 2 usage, 130 interrupted
run 'devgate ctl <verb> -h' for a verb's flags
`)
}

func verbUsage(w io.Writer, v *ctlVerb, own *flag.FlagSet) {
	fmt.Fprintf(w, "usage: devgate ctl %s\n\n%s\n", v.synopsis(), v.summary)
	if v.more != "" {
		fmt.Fprintf(w, "%s\n", v.more)
	}
	n := 0
	own.VisitAll(func(*flag.Flag) { n++ })
	if n > 0 {
		fmt.Fprint(w, "\nflags:\n")
		own.PrintDefaults()
	}
	fmt.Fprint(w, "\nglobal flags: see 'devgate ctl -h'\n")
}
