package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/devgate/devgate/pkg/sim"
)

const simExample = `  devgate sim --target 127.0.0.1:9000 --devices 1000 --reconnects 3
  devgate sim --target 127.0.0.1:9000 --devices 1000 --check --interval 100ms --duration 60s --json`

func newSimCmd() *cobra.Command {
	var (
		c sim.Config
		f simFlags
	)
	cmd := &cobra.Command{
		Use:     "sim [--target ADDR] [--devices N]",
		Short:   "connect simulated devices and report where they landed",
		Example: simExample,
		Args:    noArgs,
		RunE:    func(cmd *cobra.Command, _ []string) error { return runSim(cmd.OutOrStdout(), c, &f) },
	}
	fs := cmd.Flags()
	fs.StringVar(&c.Target, "target", "127.0.0.1:9000", "gateway address")
	fs.IntVar(&c.Devices, "devices", 100, "simulated devices")
	fs.StringVar(&c.Prefix, "prefix", "dev-", "device id prefix")
	fs.IntVar(&c.Concurrency, "concurrency", 64, "devices connecting at once")
	fs.IntVar(&c.Reconnects, "reconnects", 1, "reconnects per device after the first connection")
	fs.IntVar(&c.Heartbeats, "heartbeats", 1, "heartbeats per connection, each awaiting its echo")
	fs.DurationVar(&c.Interval, "interval", 0, "pause between heartbeats")
	fs.DurationVar(&c.Timeout, "timeout", 5*time.Second, "deadline of each network operation")
	fs.BoolVar(&f.asJSON, "json", false, "print the report as one JSON line")
	fs.Var(&f.hold, "hold", "hold the devices connected with heartbeats every --interval (default 10s) for this long (0: until ctrl-C), reconnecting each one whose connection ends; prints where they are every --every")
	fs.DurationVar(&f.h.BackoffMin, "backoff-min", sim.DefaultBackoffMin, "with --hold or --check: wait before a reconnect, doubled per failed attempt, jittered")
	fs.DurationVar(&f.h.BackoffMax, "backoff-max", sim.DefaultBackoffMax, "with --hold or --check: longest wait between attempts")
	fs.DurationVar(&f.every, "every", time.Second, "with --hold or --check: period of the status line")
	fs.BoolVar(&f.check, "check", false, "hold the devices connected with numbered heartbeats ({\"seq\":N}) every --interval (default 100ms) and check every answer: once, in order, from a backend that saw the login; counts disconnects, backend switches and their pauses; exit status 1 if a check failed")
	fs.DurationVar(&f.duration, "duration", 0, "with --check: stop after this long (0: at SIGINT/SIGTERM), then await the answers in flight and print the report")
	return cmd
}

// simFlags are sim's command line beyond sim.Config.
type simFlags struct {
	asJSON bool
	h      sim.HoldConfig
	hold   optDuration
	every  time.Duration

	check    bool
	duration time.Duration
}

func runSim(out io.Writer, c sim.Config, f *simFlags) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if f.duration != 0 && !f.check {
		return usageError{"--duration is for --check"}
	}
	if f.check {
		if f.hold.set {
			return usageError{"--check and --hold are two modes: give one"}
		}
		return runCheck(ctx, out, sim.CheckConfig{Config: c, BackoffMin: f.h.BackoffMin, BackoffMax: f.h.BackoffMax},
			f.duration, f.every, f.asJSON)
	}
	if f.hold.set {
		f.h.Config = c
		return runHold(ctx, out, f.h, f.hold.d, f.every, f.asJSON)
	}
	rep, err := sim.Run(ctx, c)
	if err != nil {
		return err
	}
	if f.asJSON {
		return json.NewEncoder(out).Encode(rep)
	}
	fmt.Fprint(out, rep.String())
	if rep.Failed > 0 {
		return fmt.Errorf("%d connections failed", rep.Failed)
	}
	return nil
}

// optDuration is a duration flag that knows whether it was given.
type optDuration struct {
	d   time.Duration
	set bool
}

func (o *optDuration) String() string {
	if o == nil || !o.set {
		return ""
	}
	return o.d.String()
}

func (o *optDuration) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	if d < 0 {
		return errors.New("must not be negative")
	}
	o.d, o.set = d, true
	return nil
}

func (o *optDuration) Type() string { return "duration" }

// runHold runs sim.Holder until ctrl-C, SIGTERM or d (0: no bound),
// printing a status line every period (to stderr under --json), then a
// summary. It fails only when no device ever logged in.
func runHold(ctx context.Context, out io.Writer, cfg sim.HoldConfig, d, every time.Duration, asJSON bool) error {
	if every <= 0 {
		return errors.New("--every must be positive")
	}
	h, err := sim.NewHolder(cfg)
	if err != nil {
		return err
	}
	ctx, cancel := withBound(ctx, d)
	defer cancel()
	stop := printLive(ctx, out, asJSON, every, func() string { return h.Status().Line() })
	st := h.Run(ctx)
	stop()
	if err := printReport(out, asJSON, st); err != nil {
		return err
	}
	if st.Logins == 0 {
		return fmt.Errorf("no device logged in to %s", cfg.Target)
	}
	return nil
}

// waitSignalThen waits for SIGINT/SIGTERM or errc, then calls stop.
func waitSignalThen(errc <-chan error, stop func() error) error {
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	if err := stop(); err != nil {
		return err
	}
	return <-errc
}
