package main

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/devgate/devgate/pkg/loadgen"
)

// loadFlags are load's flags beyond loadgen.Config.
type loadFlags struct {
	targets  string
	hold     time.Duration
	untilEOF bool
}

// newLoadCmd is `devgate load`: one load mode against one or more targets,
// printed as one JSON line. hold prints its line once every device is
// connected, then keeps them open until SIGINT/SIGTERM, EOF on stdin with
// --until-eof, or --hold elapses. storm is hold, then prints a second line
// once every device dropped and logged in again (or --storm-wait after the
// first drop), and keeps them open as hold does.
//
//	devgate load --mode pingpong --target 127.0.0.1:9000 --concurrency 64 --duration 5s
func newLoadCmd() *cobra.Command {
	var (
		c loadgen.Config
		f loadFlags
	)
	cmd := &cobra.Command{
		Use:     "load --mode hold|churn|pingpong|bulk|storm [flags]",
		Short:   "load generator for benchmarks: hold, churn, pingpong, bulk, storm (JSON lines)",
		Example: "  devgate load --mode pingpong --target 127.0.0.1:9000 --concurrency 64 --duration 5s",
		Args:    noArgs,
		RunE:    func(cmd *cobra.Command, _ []string) error { return runLoad(cmd.OutOrStdout(), c, f) },
	}
	fs := cmd.Flags()
	fs.StringVar(&f.targets, "target", "127.0.0.1:9000", "comma-separated host:port; device i dials target i%n")
	fs.StringVar(&c.Mode, "mode", "", "hold, churn, pingpong, bulk or storm")
	fs.IntVar(&c.Devices, "devices", 1000, "hold: connections to open")
	fs.IntVar(&c.Concurrency, "concurrency", 64, "connections at once (hold: dials in flight)")
	fs.DurationVar(&c.Duration, "duration", 5*time.Second, "churn, pingpong, bulk: measured time")
	fs.DurationVar(&c.Interval, "interval", 0, "pingpong: each device sends every interval; 0: back to back")
	fs.IntVar(&c.Sources, "sources", 0, "loopback source addresses to spread over (127.B.x.y); 0: OS default")
	fs.IntVar(&c.SourceBase, "source-base", 10, "second octet B of the source addresses")
	fs.IntVar(&c.FirstDevice, "first-device", 0, "index of the first device id")
	fs.StringVar(&c.Prefix, "prefix", "dev-", "device id prefix")
	fs.IntVar(&c.FrameSize, "frame-size", 4090, "bulk: frame body bytes")
	fs.DurationVar(&c.Timeout, "timeout", 5*time.Second, "deadline of each dial and exchange")
	fs.IntVar(&c.MaxFailures, "max-failures", 1000, "hold: stop dialling after this many failures; -1: never")
	fs.DurationVar(&c.StormWait, "storm-wait", loadgen.DefaultStormWait, "storm: wait this long after the first drop for every device to be back")
	fs.DurationVar(&f.hold, "hold", 0, "hold: keep the connections this long; 0: until a signal")
	fs.BoolVar(&f.untilEOF, "until-eof", false, "hold: keep the connections until stdin reaches EOF")
	return cmd
}

func runLoad(out io.Writer, c loadgen.Config, f loadFlags) error {
	c.Targets = strings.Split(f.targets, ",")
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	res, err := loadgen.Run(ctx, c)
	if err != nil {
		return err
	}
	if err := json.NewEncoder(out).Encode(res); err != nil {
		return err
	}
	if c.Mode != loadgen.Hold && c.Mode != loadgen.Storm {
		return nil
	}
	defer res.Release()
	if f.untilEOF {
		go func() {
			var b [512]byte
			for {
				if _, err := os.Stdin.Read(b[:]); err != nil {
					stop()
					return
				}
			}
		}()
	}
	if f.hold > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, f.hold)
		defer cancel()
	}
	if c.Mode == loadgen.Storm {
		if err := json.NewEncoder(out).Encode(res.AwaitStorm(ctx)); err != nil {
			return err
		}
	}
	<-ctx.Done()
	return nil
}
