package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/devgate/devgate/pkg/sim"
)

func runSim(args []string) error {
	fs := flag.NewFlagSet("sim", flag.ContinueOnError)
	var c sim.Config
	fs.StringVar(&c.Target, "target", "127.0.0.1:9000", "gateway address")
	fs.IntVar(&c.Devices, "devices", 100, "simulated devices")
	fs.StringVar(&c.Prefix, "prefix", "dev-", "device id prefix")
	fs.IntVar(&c.Concurrency, "concurrency", 64, "devices connecting at once")
	fs.IntVar(&c.Reconnects, "reconnects", 1, "reconnects per device after the first connection")
	fs.IntVar(&c.Heartbeats, "heartbeats", 1, "heartbeats per connection, each awaiting its echo")
	fs.DurationVar(&c.Interval, "interval", 0, "pause between heartbeats")
	fs.DurationVar(&c.Timeout, "timeout", 5*time.Second, "deadline of each network operation")
	asJSON := fs.Bool("json", false, "print the report as one JSON line")
	var h sim.HoldConfig
	var hold optDuration
	fs.Var(&hold, "hold", "hold the devices connected with heartbeats every --interval (default 10s) for this long (0: until ctrl-C), reconnecting each one whose connection ends; prints where they are every --every")
	fs.DurationVar(&h.BackoffMin, "backoff-min", sim.DefaultBackoffMin, "with --hold: wait before a reconnect, doubled per failed attempt, jittered")
	fs.DurationVar(&h.BackoffMax, "backoff-max", sim.DefaultBackoffMax, "with --hold: longest wait between attempts")
	every := fs.Duration("every", time.Second, "with --hold: period of the status line")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if hold.set {
		h.Config = c
		return runHold(ctx, h, hold.d, *every, *asJSON)
	}
	rep, err := sim.Run(ctx, c)
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(os.Stdout).Encode(rep)
	}
	fmt.Print(rep.String())
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

// runHold runs sim.Holder until ctrl-C, SIGTERM or d (0: no bound),
// printing a status line every period (to stderr under --json), then a
// summary. It fails only when no device ever logged in.
func runHold(ctx context.Context, cfg sim.HoldConfig, d, every time.Duration, asJSON bool) error {
	if every <= 0 {
		return errors.New("--every must be positive")
	}
	h, err := sim.NewHolder(cfg)
	if err != nil {
		return err
	}
	if d > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	live := io.Writer(os.Stdout)
	if asJSON {
		live = os.Stderr
	}
	printed := make(chan struct{})
	go func() {
		defer close(printed)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				fmt.Fprintln(live, h.Status().Line())
			}
		}
	}()
	st := h.Run(ctx)
	<-printed
	if asJSON {
		if err := json.NewEncoder(os.Stdout).Encode(st); err != nil {
			return err
		}
	} else {
		fmt.Print(st.String())
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
