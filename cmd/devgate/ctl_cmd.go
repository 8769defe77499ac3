package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	adminv1 "github.com/devgate/devgate/api/devgate/admin/v1"
)

// newCtlCmd is `devgate ctl`: it operates the fleet through the admin API
// of any one gateway replica, which answers for all of them. Each entry of
// ctlVerbs becomes a subcommand; the global flags are accepted before or
// after the verb.
//
//	devgate ctl --addr gw-1:9090 --token "$T" backends
//	devgate ctl drain netty-3 --deadline 2m --pace 20 --reason "kernel update" --wait
func newCtlCmd() *cobra.Command {
	g := &ctlFlags{}
	cmd := &cobra.Command{
		Use:   "ctl VERB [flags]",
		Short: "operate the fleet through the admin API (backends, drain, lookup, ...)",
		Long: `Operates the fleet through the admin API of any gateway replica.

exit codes: 0 ok, 1 the call failed, 2 usage, 130 interrupted`,
		Args: cobra.ArbitraryArgs,
		// Without a verb: the usage, as a usage error. `ctl help VERB` is
		// the verb's help. Anything else is a verb that does not exist.
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case len(args) == 0:
				fmt.Fprint(cmd.ErrOrStderr(), cmd.UsageString())
				return &exitError{code: exitUsage, quiet: true}
			case args[0] == "help" && len(args) == 2:
				sub, _, err := cmd.Find(args[1:])
				if err != nil || sub == cmd {
					return usagef("unknown verb %q%s", args[1], suggest(cmd, args[1]))
				}
				return sub.Help()
			}
			return usagef("unknown verb %q%s", args[0], suggest(cmd, args[0]))
		},
	}
	g.register(cmd.PersistentFlags())
	for _, v := range append(ctlVerbs(), connVerbs()...) {
		cmd.AddCommand(newCtlVerbCmd(v, g))
	}
	return cmd
}

// newCtlVerbCmd turns one ctlVerb into a subcommand.
func newCtlVerbCmd(v ctlVerb, g *ctlFlags) *cobra.Command {
	long := v.summary
	if v.more != "" {
		long += "\n\n" + v.more
	}
	cmd := &cobra.Command{Use: v.synopsis(), Short: v.summary, Long: long}
	body := v.setup(cmd.Flags())
	cmd.Args = func(_ *cobra.Command, pos []string) error {
		switch {
		case len(pos) == len(v.args):
			return nil
		case len(v.args) == 0:
			return usagef("takes no arguments, got %q", pos)
		}
		return usagef("want %s, got %q", strings.Join(v.args, " "), pos)
	}
	cmd.RunE = func(cmd *cobra.Command, pos []string) error {
		ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		return g.run(ctx, cmd.OutOrStdout(), cmd.ErrOrStderr(), func(c *ctlRun) error { return body(c, pos) })
	}
	return cmd
}

// run dials and runs one verb's body, turning its error into what the
// operator reads and the exit code.
func (g *ctlFlags) run(ctx context.Context, stdout, stderr io.Writer, body func(*ctlRun) error) error {
	if err := g.resolve(); err != nil {
		return err
	}
	conn, err := g.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	if g.token != "" && !g.tls() && !loopback(g.addr) {
		fmt.Fprintf(stderr, "devgate ctl: warning: sending the token without TLS to %s\n", g.addr)
	}
	c := &ctlRun{ctlFlags: *g, ctx: ctx, out: stdout, progress: stdout, errw: stderr, admin: adminv1.NewAdminClient(conn)}
	if g.json {
		c.progress = stderr
	}
	err = body(c)
	var ue usageError
	switch {
	case err == nil || errors.As(err, &ue):
		return err
	case errors.Is(err, errInterrupted):
		return &exitError{code: exitInterrupted, quiet: true}
	case ctx.Err() != nil:
		return &exitError{code: exitInterrupted, err: errInterrupted}
	}
	return errors.New(c.explain(err))
}

// ctlMainCtx runs `devgate ctl ARGS...` in-process and returns its exit code.
func ctlMainCtx(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runMain(ctx, append([]string{"ctl"}, args...), stdout, stderr)
}
