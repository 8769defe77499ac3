package main

import (
	"fmt"
	"strings"
	"time"

	flag "github.com/spf13/pflag"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	adminv1 "github.com/devgate/devgate/api/devgate/admin/v1"
)

// ctlVerb is one `devgate ctl` verb. setup registers the verb's flags on fs
// and returns the body, which reads them.
type ctlVerb struct {
	name    string
	args    []string // positional arguments, all required
	flags   string   // flags shown in the synopsis
	summary string
	more    string // usage detail after the summary
	setup   func(fs *flag.FlagSet) func(c *ctlRun, args []string) error
}

func (v *ctlVerb) synopsis() string {
	return strings.TrimSpace(strings.Join(append(append([]string{v.name}, v.args...), v.flags), " "))
}

// paceFlag is --pace: zero leaves the pace to the server (DefaultPace there).
func paceFlag(fs *flag.FlagSet) *float64 {
	return fs.Float64("pace", 0, "evictions per second across the fleet (0: the server's default, 50)")
}

func checkPace(p float64) error {
	if p < 0 {
		return usagef("--pace must not be negative")
	}
	return nil
}

func ctlVerbs() []ctlVerb {
	return []ctlVerb{
		{name: "backends", summary: "list backends: weight, zone, state, ring share, connections",
			setup: func(*flag.FlagSet) func(*ctlRun, []string) error { return (*ctlRun).backends }},
		{name: "drain", args: []string{"ID"}, flags: "[--deadline 30s] [--pace N] [--reason TEXT] [--wait]",
			summary: "take a backend out of the ring; move or evict its connections after the deadline",
			more: "The drain is stored in etcd: every gateway stops sending new devices to ID at once.\n" +
				"Connections stay until the deadline, then are relocated at the pace, fleet-wide: moved\n" +
				"live to their new owner (rehome.enabled, and the owner registered with rehome=login), else evicted.\n" +
				"--wait shows progress every second until none are left; ctrl-C stops watching, not the drain.\n" +
				"Gateways that do not confirm within a few seconds (cut off from etcd) are named; ctl exits 1 then.",
			setup: func(fs *flag.FlagSet) func(*ctlRun, []string) error {
				deadline := fs.Duration("deadline", 30*time.Second, "how long connections may stay (0: evict at once)")
				pace := paceFlag(fs)
				reason := fs.String("reason", "", "why, stored with the drain")
				wait := fs.Bool("wait", false, "show progress until the backend has no connections")
				return func(c *ctlRun, a []string) error { return c.drain(a[0], *deadline, *pace, *reason, *wait) }
			}},
		{name: "undrain", args: []string{"ID"}, summary: "put a drained backend back in the ring",
			setup: func(*flag.FlagSet) func(*ctlRun, []string) error {
				return func(c *ctlRun, a []string) error { return c.undrain(a[0]) }
			}},
		{name: "lookup", args: []string{"DEVID"}, flags: "[--fallbacks N]",
			summary: "which backend owns a device, and the fallback order",
			setup: func(fs *flag.FlagSet) func(*ctlRun, []string) error {
				n := fs.Uint("fallbacks", 0, "owners to list after the first (0: as many as the data path tries)")
				return func(c *ctlRun, a []string) error { return c.lookup(a[0], *n) }
			}},
		{name: "rebalance", flags: "[--pace N] [--dry-run]",
			summary: "move or evict, paced, the connections whose device now belongs to another backend",
			more: "Prints progress (moved, evicted) as the gateways report it. ctrl-C cancels the rebalance;\n" +
				"connections already relocated stay so. Exits 1 if a gateway did not finish.",
			setup: func(fs *flag.FlagSet) func(*ctlRun, []string) error {
				pace := paceFlag(fs)
				dry := fs.Bool("dry-run", false, "count the misplaced connections only")
				return func(c *ctlRun, _ []string) error { return c.rebalance(*pace, *dry) }
			}},
		{name: "gateways", summary: "list gateway replicas and check they route on the same ring",
			setup: func(*flag.FlagSet) func(*ctlRun, []string) error { return (*ctlRun).gateways }},
		{name: "drain-gateway", args: []string{"ID"}, flags: "[--pace N] [--wait]",
			summary: "make a gateway fail readiness, stop accepting and evict its connections",
			more: "The gateway evicts at the pace (its own, not split with the fleet), then stays up,\n" +
				"not ready and accepting no devices, until 'devgate ctl undrain-gateway ID' or SIGTERM.",
			setup: func(fs *flag.FlagSet) func(*ctlRun, []string) error {
				pace := paceFlag(fs)
				wait := fs.Bool("wait", false, "show progress until the gateway has no connections")
				return func(c *ctlRun, a []string) error { return c.drainGateway(a[0], *pace, *wait) }
			}},
		{name: "undrain-gateway", args: []string{"ID"}, summary: "end a gateway's drain: it accepts devices again and is ready",
			setup: func(*flag.FlagSet) func(*ctlRun, []string) error {
				return func(c *ctlRun, a []string) error { return c.undrainGateway(a[0]) }
			}},
	}
}

func (c *ctlRun) backends(_ []string) error {
	ctx, cancel := c.call()
	defer cancel()
	resp, err := c.admin.ListBackends(ctx, &adminv1.ListBackendsRequest{})
	if err != nil {
		return err
	}
	if c.json {
		return writeJSON(c.out, resp)
	}
	renderBackends(c.out, resp, time.Now())
	return nil
}

func (c *ctlRun) drain(id string, deadline time.Duration, pace float64, reason string, wait bool) error {
	if deadline < 0 {
		return usagef("--deadline must not be negative")
	}
	if err := checkPace(pace); err != nil {
		return err
	}
	ctx, cancel := c.call()
	defer cancel()
	resp, err := c.admin.DrainBackend(ctx, &adminv1.DrainBackendRequest{
		Id: id, Deadline: durationpb.New(deadline), EvictPerSecond: pace, Reason: reason})
	if err != nil {
		return err
	}
	// Under --json the document comes first: the drain is stored, whatever the wait does.
	if c.json {
		if err := writeJSON(c.out, resp); err != nil {
			return err
		}
	} else {
		renderDrain(c.out, id, resp.GetDrain(), resp.GetUnconfirmed(), time.Now())
	}
	if err := unconfirmedError(resp.GetUnconfirmed()); err != nil {
		return err
	}
	if !wait {
		return nil
	}
	return c.waitDrain(id)
}

func (c *ctlRun) undrain(id string) error {
	ctx, cancel := c.call()
	defer cancel()
	resp, err := c.admin.UndrainBackend(ctx, &adminv1.UndrainBackendRequest{Id: id})
	switch {
	case err != nil:
		return err
	case c.json:
		return writeJSON(c.out, resp)
	case len(resp.GetUnconfirmed()) > 0:
		fmt.Fprintf(c.out, "undrained %s: stored in etcd, back in the ring on the gateways that confirmed\n", id)
		writeUnconfirmed(c.out, resp.GetUnconfirmed())
	case resp.GetWasDraining():
		fmt.Fprintf(c.out, "undrained %s: it is back in the ring on every gateway\n", id)
	default:
		fmt.Fprintf(c.out, "%s was not draining; nothing changed\n", id)
	}
	return unconfirmedError(resp.GetUnconfirmed())
}

func (c *ctlRun) lookup(devid string, fallbacks uint) error {
	if fallbacks > 1000 {
		return usagef("--fallbacks %d: at most 1000", fallbacks)
	}
	ctx, cancel := c.call()
	defer cancel()
	resp, err := c.admin.Lookup(ctx, &adminv1.LookupRequest{Devid: devid, Fallbacks: uint32(fallbacks)})
	if err != nil {
		return err
	}
	if c.json {
		return writeJSON(c.out, resp)
	}
	renderLookup(c.out, devid, resp)
	return nil
}

func (c *ctlRun) gateways(_ []string) error {
	ctx, cancel := c.call()
	defer cancel()
	resp, err := c.admin.ListGateways(ctx, &adminv1.ListGatewaysRequest{})
	if err != nil {
		return err
	}
	if c.json {
		return writeJSON(c.out, resp)
	}
	renderGateways(c.out, resp)
	return nil
}

func (c *ctlRun) drainGateway(id string, pace float64, wait bool) error {
	if err := checkPace(pace); err != nil {
		return err
	}
	ctx, cancel := c.call()
	defer cancel()
	resp, err := c.admin.DrainGateway(ctx, &adminv1.DrainGatewayRequest{Id: id, EvictPerSecond: pace})
	if err != nil {
		return gatewayHint(err)
	}
	if c.json {
		if err := writeJSON(c.out, resp); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(c.out, "gateway %s is draining: not ready, accepting no devices; evicting %s at %s\n",
			id, plural(resp.GetGateway().GetConnections(), "connection"), paceText(pace))
	}
	if !wait {
		return nil
	}
	return c.waitGateway(id)
}

func (c *ctlRun) undrainGateway(id string) error {
	ctx, cancel := c.call()
	defer cancel()
	resp, err := c.admin.UndrainGateway(ctx, &adminv1.UndrainGatewayRequest{Id: id})
	switch {
	case err != nil:
		return gatewayHint(err)
	case c.json:
		return writeJSON(c.out, resp)
	case resp.GetWasDraining():
		fmt.Fprintf(c.out, "undrained gateway %s: ready and accepting devices again\n", id)
	default:
		fmt.Fprintf(c.out, "gateway %s was not draining; nothing changed\n", id)
	}
	return nil
}

// gatewayHint points at the list of gateway ids when the one given is unknown.
func gatewayHint(err error) error {
	if st, ok := status.FromError(err); ok && st.Code() == codes.NotFound {
		return status.Errorf(codes.NotFound, "%s; 'devgate ctl gateways' lists the ids", st.Message())
	}
	return err
}
