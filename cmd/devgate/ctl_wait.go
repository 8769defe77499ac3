package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	adminv1 "github.com/devgate/devgate/api/devgate/admin/v1"
)

// ctlPollEvery is how often --wait asks again; tests shorten it.
var ctlPollEvery = time.Second

// ctlPollFailures is how many failed polls in a row end a --wait.
const ctlPollFailures = 5

// poll calls f every ctlPollEvery until it reports done, ctrl-C, or
// ctlPollFailures retryable errors in a row. stopped says what ctrl-C leaves.
func (c *ctlRun) poll(stopped string, f func(ctx context.Context) (done bool, err error)) error {
	t := time.NewTicker(ctlPollEvery)
	defer t.Stop()
	fails := 0
	for {
		ctx, cancel := c.call()
		done, err := f(ctx)
		cancel()
		switch {
		case c.ctx.Err() != nil:
		case err == nil:
			fails = 0
		case !retryable(err):
			return err
		default:
			if fails++; fails >= ctlPollFailures {
				return err
			}
			fmt.Fprintf(c.errw, "devgate ctl: %s; trying again\n", c.explain(err))
		}
		if done && err == nil {
			return nil
		}
		select {
		case <-c.ctx.Done():
			fmt.Fprintf(c.errw, "devgate ctl: stopped waiting; %s\n", stopped)
			return errInterrupted
		case <-t.C:
		}
	}
}

// ctlProgressEvery is how often --wait repeats a progress line that has
// not changed; a changed one is printed at once.
var ctlProgressEvery = 10 * time.Second

// progressLine prints line when key differs from the last one printed, or
// when the last one is ctlProgressEvery old.
type progressLine struct {
	key string
	at  time.Time
}

func (p *progressLine) print(w io.Writer, key, line string) {
	if now := time.Now(); key != p.key || now.Sub(p.at) >= ctlProgressEvery {
		fmt.Fprintln(w, line)
		p.key, p.at = key, now
	}
}

func (c *ctlRun) waitDrain(id string) error {
	stopped := fmt.Sprintf("the drain goes on ('devgate ctl undrain %s' ends it)", id)
	var last progressLine
	return c.poll(stopped, func(ctx context.Context) (bool, error) {
		resp, err := c.admin.ListBackends(ctx, &adminv1.ListBackendsRequest{})
		if err != nil {
			return false, err
		}
		var b *adminv1.Backend
		for _, x := range resp.GetBackends() {
			if x.GetId() == id {
				b = x
			}
		}
		switch {
		case b == nil:
			fmt.Fprintf(c.progress, "%s is no longer registered; done\n", id)
			return true, nil
		case b.GetState() == adminv1.BackendState_BACKEND_STATE_ACTIVE:
			return false, fmt.Errorf("%s is active again: someone undrained it", id)
		}
		now := time.Now()
		evicting := b.GetDrain() == nil || !b.GetDrain().GetDeadline().AsTime().After(now)
		partial := partialNote(resp.GetPartial())
		dp := b.GetDrainProgress()
		last.print(c.progress, fmt.Sprint(b.GetConnections(), evicting, partial, dp.GetMoved(), dp.GetEvicted(), dp.GetGone()), drainLine(b, now)+partial)
		if b.GetConnections() > 0 {
			return false, nil
		}
		moved := ""
		if dp != nil {
			moved = " (" + movedText(dp.GetMoved(), dp.GetEvicted(), dp.GetGone()) + ")"
		}
		fmt.Fprintf(c.progress, "drained %s: no connections left%s%s; it stays out of the ring until 'devgate ctl undrain %s'\n", id, moved, partial, id)
		return true, nil
	})
}

func (c *ctlRun) waitGateway(id string) error {
	return c.poll("the gateway goes on draining", func(ctx context.Context) (bool, error) {
		resp, err := c.admin.ListGateways(ctx, &adminv1.ListGatewaysRequest{})
		if err != nil {
			return false, err
		}
		for _, g := range resp.GetGateways() {
			if g.GetId() == id {
				fmt.Fprintf(c.progress, "draining gateway %s: %s left\n", id, plural(g.GetConnections(), "connection"))
				if g.GetConnections() > 0 {
					return false, nil
				}
				fmt.Fprintf(c.progress, "gateway %s drained; it stays up, not ready, until 'devgate ctl undrain-gateway %s' or SIGTERM\n", id, id)
				return true, nil
			}
		}
		if why, ok := resp.GetPartial().GetErrors()[id]; ok {
			fmt.Fprintf(c.progress, "draining gateway %s: did not answer: %s\n", id, why)
			return false, nil
		}
		fmt.Fprintf(c.progress, "gateway %s left the fleet; done\n", id)
		return true, nil
	})
}

// errIdle ends a rebalance stream that stopped reporting.
var errIdle = errors.New("no progress")

// rebalance reads the progress stream to its end. The stream has no
// deadline, for paced eviction takes as long as it takes; instead each
// message must come within --timeout of the last (the server reports every
// 500ms).
func (c *ctlRun) rebalance(pace float64, dry bool) error {
	if err := checkPace(pace); err != nil {
		return err
	}
	ctx, cancel := context.WithCancelCause(c.ctx)
	defer cancel(nil)
	idle := time.AfterFunc(c.timeout, func() { cancel(errIdle) })
	defer idle.Stop()
	stream, err := c.admin.Rebalance(c.auth(ctx), &adminv1.RebalanceRequest{EvictPerSecond: pace, DryRun: dry})
	if err != nil {
		return err
	}
	var last *adminv1.RebalanceProgress
	for last == nil || !last.GetDone() {
		p, err := stream.Recv()
		if err != nil {
			switch {
			case errors.Is(context.Cause(ctx), errIdle):
				return fmt.Errorf("%s sent no progress for %s (--timeout); the rebalance may go on", c.addr, c.timeout)
			case c.ctx.Err() != nil:
				fmt.Fprintf(c.errw, "devgate ctl: rebalance cancelled%s\n", evictedSoFar(last))
				return errInterrupted
			case err == io.EOF:
				return fmt.Errorf("the stream ended before the rebalance was done%s", evictedSoFar(last))
			}
			return err
		}
		idle.Reset(c.timeout)
		last = p
		fmt.Fprintln(c.progress, rebalanceLine(p))
	}
	if c.json {
		if err := writeJSON(c.out, last); err != nil {
			return err
		}
	} else {
		renderRebalanceSummary(c.out, last, dry)
	}
	var failed []string
	for _, g := range last.GetGateways() {
		if g.GetError() != "" {
			failed = append(failed, g.GetGateway())
		}
	}
	for id := range last.GetPartial().GetErrors() {
		if !slices.Contains(failed, id) {
			failed = append(failed, id)
		}
	}
	if len(failed) > 0 || last.GetPartial().GetPartial() {
		return fmt.Errorf("rebalance incomplete: %s did not finish", joinSorted(failed))
	}
	return nil
}

func evictedSoFar(p *adminv1.RebalanceProgress) string {
	if p == nil {
		return ""
	}
	return fmt.Sprintf(" after relocating %d of %d misplaced connections (%s)", p.GetMoved()+p.GetEvicted()+p.GetGone(),
		p.GetMisplaced(), movedText(p.GetMoved(), p.GetEvicted(), p.GetGone()))
}
