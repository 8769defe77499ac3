// Command devgate is the device gateway: one binary with subcommands, one
// function per verb (newServeCmd, newSimCmd, ...), put together in newRootCmd.
//
//	devgate dev                      all-in-one: demo backends + gateway on 127.0.0.1:9000
//	devgate serve --config FILE      the gateway
//	devgate sim --target ADDR        simulated devices; prints where they landed
//	devgate backend --id ID          a demo backend (stands in for a Netty server)
//	devgate load --mode MODE         load generator for benchmarks (one JSON line)
//	devgate register --etcd URL ...  register a backend in etcd while its port accepts
//	devgate ctl VERB                 operate the fleet through the admin API
//	devgate config check FILE        validate a config file
//	devgate completion bash          shell completion
//	devgate version
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// version and revision are stamped at build time:
// -ldflags "-X main.version=v1.2.3 -X main.revision=$(git rev-parse HEAD)".
// An empty revision falls back to the VCS stamp of the build.
var version, revision = "dev", ""

// Exit codes, for every verb.
const (
	exitOK          = 0
	exitFailed      = 1   // the command ran and failed
	exitUsage       = 2   // bad flags or arguments; nothing was done
	exitInterrupted = 130 // ctrl-C
)

// usageError is a bad command line: one line, a hint at --help, exit 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }

// exitError ends with code; quiet when the command has said why already.
type exitError struct {
	code  int
	err   error
	quiet bool
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "devgate",
		Short: "TCP gateway for long-lived device connections, routed on a consistent-hash ring",
		Long: `devgate reads the first frame of each device connection, extracts the device id
and routes the connection on a consistent-hash ring shared by every replica.

exit codes: 0 ok, 1 failed, 2 usage error, 130 interrupted`,
		Version:       version,
		SilenceErrors: true, // runMain prints one line
		SilenceUsage:  true,
		Args:          noArgs,
		RunE:          usageRunE,
	}
	root.SetVersionTemplate("devgate {{.Version}}\n")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err.Error()} })
	root.AddCommand(newDevCmd(), newServeCmd(), newSimCmd(), newBackendCmd(), newLoadCmd(),
		newRegisterCmd(), newCtlCmd(), newConfigCmd(), newVersionCmd())
	return root
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use: "version", Short: "print the version", Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintln(cmd.OutOrStdout(), version)
			return nil
		},
	}
}

// usageRunE runs a command that only groups others, called without one:
// its usage on stderr, exit 2.
func usageRunE(cmd *cobra.Command, _ []string) error {
	fmt.Fprint(cmd.ErrOrStderr(), cmd.UsageString())
	return &exitError{code: exitUsage, quiet: true}
}

// noArgs is cobra.NoArgs as a usage error; for a command with
// subcommands, an unknown one.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		if cmd.HasSubCommands() {
			return usagef("unknown command %q%s", args[0], suggest(cmd, args[0]))
		}
		return usagef("takes no arguments, got %q", args)
	}
	return nil
}

// suggest names the subcommands of cmd close to typo (edit distance 2).
func suggest(cmd *cobra.Command, typo string) string {
	cmd.SuggestionsMinimumDistance = max(cmd.SuggestionsMinimumDistance, 2)
	if s := cmd.SuggestionsFor(typo); len(s) > 0 {
		return fmt.Sprintf(" (did you mean %s?)", strings.Join(s, " or "))
	}
	return ""
}

func main() {
	os.Exit(runMain(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

// runMain runs one command line and returns the exit code. Errors are one
// line, "devgate VERB: what went wrong", and for usage errors a second line
// pointing at --help.
func runMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRootCmd()
	root.SetArgs(longDashes(root, args))
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	var ee *exitError
	if errors.As(err, &ee) && ee.quiet {
		return ee.code
	}
	if cmd == nil {
		cmd = root
	}
	fmt.Fprintf(stderr, "%s: %v\n", cmd.CommandPath(), err)
	var ue usageError
	switch {
	case errors.As(err, &ue) || strings.HasPrefix(err.Error(), "unknown command "):
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
		return exitUsage
	case ee != nil:
		return ee.code
	}
	return exitFailed
}

// selfName is how to run this binary again from the same directory, for
// the commands it prints: its name if PATH finds this very file there, else
// the path it was started by (./bin/devgate under make run).
func selfName(arg0 string) string {
	base := filepath.Base(arg0)
	onPath, err := exec.LookPath(base)
	if err != nil {
		return arg0
	}
	a, err1 := os.Stat(onPath)
	b, err2 := os.Stat(arg0)
	if err1 != nil || err2 != nil || !os.SameFile(a, b) {
		return arg0
	}
	return base
}

// singleDashLong is a long flag written with one dash, as Go's flag package
// took it (-config FILE, -devices=10).
var singleDashLong = regexp.MustCompile(`^-([A-Za-z][A-Za-z0-9-]+)(=.*)?$`)

// longDashes rewrites -name to --name when name is a flag of some devgate
// command, so that command lines written for the flag package devgate used
// before cobra keep working. Other arguments ("-maintenance" as a --reason)
// are left as they are, and "--" ends the rewriting.
func longDashes(root *cobra.Command, args []string) []string {
	names := map[string]bool{}
	var collect func(*cobra.Command)
	collect = func(c *cobra.Command) {
		c.InitDefaultHelpFlag()
		c.InitDefaultVersionFlag()
		for _, fs := range []*pflag.FlagSet{c.Flags(), c.PersistentFlags()} {
			fs.VisitAll(func(f *pflag.Flag) { names[f.Name] = true })
		}
		for _, sub := range c.Commands() {
			collect(sub)
		}
	}
	collect(root)
	out := make([]string, 0, len(args))
	for i, a := range args {
		if a == "--" {
			return append(out, args[i:]...)
		}
		if m := singleDashLong.FindStringSubmatch(a); m != nil && names[m[1]] {
			a = "-" + a
		}
		out = append(out, a)
	}
	return out
}
