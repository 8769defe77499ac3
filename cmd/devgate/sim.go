package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/devgate/devgate/pkg/sim"
)

func newSimCmd() *cobra.Command {
	var (
		c      sim.Config
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:     "sim [--target ADDR] [--devices N]",
		Short:   "connect simulated devices and report where they landed",
		Example: "  devgate sim --target 127.0.0.1:9000 --devices 1000 --reconnects 3",
		Args:    noArgs,
		RunE:    func(cmd *cobra.Command, _ []string) error { return runSim(cmd.OutOrStdout(), c, asJSON) },
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
	fs.BoolVar(&asJSON, "json", false, "print the report as one JSON line")
	return cmd
}

func runSim(out io.Writer, c sim.Config, asJSON bool) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	rep, err := sim.Run(ctx, c)
	if err != nil {
		return err
	}
	if asJSON {
		return json.NewEncoder(out).Encode(rep)
	}
	fmt.Fprint(out, rep.String())
	if rep.Failed > 0 {
		return fmt.Errorf("%d connections failed", rep.Failed)
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
