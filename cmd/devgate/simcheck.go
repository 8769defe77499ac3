package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/devgate/devgate/pkg/sim"
)

// runCheck runs sim.Checker until ctrl-C, SIGTERM or d (0: no bound),
// printing a status line every period (to stderr under --json), then the
// report: text, or one JSON object with --json. It fails when a check did.
func runCheck(ctx context.Context, out io.Writer, cfg sim.CheckConfig, d, every time.Duration, asJSON bool) error {
	if every <= 0 {
		return errors.New("--every must be positive")
	}
	if d < 0 {
		return usageError{"--duration must not be negative"}
	}
	c, err := sim.NewChecker(cfg)
	if err != nil {
		return err
	}
	ctx, cancel := withBound(ctx, d)
	defer cancel()
	stop := printLive(ctx, out, asJSON, every, func() string { return c.Status().Line() })
	r := c.Run(ctx)
	stop()
	if err := printReport(out, asJSON, r); err != nil {
		return err
	}
	if p := r.Problems(); len(p) > 0 {
		return fmt.Errorf("check failed: %s", strings.Join(p, ", "))
	}
	return nil
}

// withBound bounds ctx by d (0: no bound).
func withBound(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if d > 0 {
		return context.WithTimeout(ctx, d)
	}
	return context.WithCancel(ctx)
}

// printLive prints line() every period until ctx ends: to out, or to stderr
// when out carries the JSON report. The returned func waits for it to stop.
func printLive(ctx context.Context, out io.Writer, asJSON bool, every time.Duration, line func() string) (wait func()) {
	live := out
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
				fmt.Fprintln(live, line())
			}
		}
	}()
	return func() { <-printed }
}

// printReport writes r as one JSON object, or as its text.
func printReport(out io.Writer, asJSON bool, r fmt.Stringer) error {
	if asJSON {
		return json.NewEncoder(out).Encode(r)
	}
	_, err := fmt.Fprint(out, r.String())
	return err
}
