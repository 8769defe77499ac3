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
	if d > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
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
				fmt.Fprintln(live, c.Status().Line())
			}
		}
	}()
	r := c.Run(ctx)
	<-printed
	if asJSON {
		if err := json.NewEncoder(out).Encode(r); err != nil {
			return err
		}
	} else {
		fmt.Fprint(out, r.String())
	}
	if p := r.Problems(); len(p) > 0 {
		return fmt.Errorf("check failed: %s", strings.Join(p, ", "))
	}
	return nil
}
