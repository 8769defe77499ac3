package main

import (
	"errors"
	"fmt"
	"io"
	"time"

	flag "github.com/spf13/pflag"
	"google.golang.org/protobuf/types/known/durationpb"

	adminv1 "github.com/devgate/devgate/api/devgate/admin/v1"
)

// connVerbs are the verbs about live connections: find, kick, conns.
func connVerbs() []ctlVerb {
	return []ctlVerb{
		{name: "find", args: []string{"DEVID"},
			summary: "where a device is connected now: gateway, backend, address, since, bytes",
			more: "Asks every gateway. A device usually has one connection; two while it reconnects\n" +
				"(the older one is closed) or when gateways keep duplicates. Exits 1 if none is found.",
			setup: func(*flag.FlagSet) func(*ctlRun, []string) error {
				return func(c *ctlRun, a []string) error { return c.find(a[0]) }
			}},
		{name: "kick", args: []string{"DEVID"}, flags: "[--reason TEXT]",
			summary: "disconnect a device on every gateway (it reconnects by itself)",
			more: "Writes the reconnect notice first where one is configured (evictNotice). Counted as\n" +
				"close reason \"kicked\". Needs the admin role. Exits 1 if no connection was found.",
			setup: func(fs *flag.FlagSet) func(*ctlRun, []string) error {
				reason := fs.String("reason", "", "why, for the gateways' log and the audit line")
				return func(c *ctlRun, a []string) error { return c.kick(a[0], *reason) }
			}},
		{name: "conns", flags: "[--backend B] [--gateway G] [--min-age D] [--limit N]",
			summary: "list live connections across the fleet, oldest first per gateway",
			more:    "Pages through the gateways in id order; --limit bounds the rows (0: all, page by page).",
			setup: func(fs *flag.FlagSet) func(*ctlRun, []string) error {
				backend := fs.String("backend", "", "only connections to this backend")
				gateway := fs.String("gateway", "", "only connections on this gateway")
				minAge := fs.Duration("min-age", 0, "only connections at least this old")
				limit := fs.Int("limit", 100, "at most this many rows (0: all)")
				return func(c *ctlRun, _ []string) error {
					return c.conns(&adminv1.ListConnectionsRequest{Backend: *backend, Gateway: *gateway,
						MinAge: durationpb.New(*minAge)}, *limit)
				}
			}},
	}
}

// errNoConnection: find or kick found the device nowhere (exit 1).
var errNoConnection = errors.New("no live connection of that device on any gateway that answered")

func (c *ctlRun) find(devid string) error {
	ctx, cancel := c.call()
	defer cancel()
	resp, err := c.admin.FindDevice(ctx, &adminv1.FindDeviceRequest{Devid: devid})
	if err != nil {
		return err
	}
	if c.json {
		if err := writeJSON(c.out, resp); err != nil {
			return err
		}
	} else {
		renderConns(c.out, resp.GetConnections(), time.Now())
		if p := partialLine(resp.GetPartial()); p != "" {
			fmt.Fprintln(c.out, p)
		}
	}
	if len(resp.GetConnections()) == 0 {
		return errNoConnection
	}
	return nil
}

func (c *ctlRun) kick(devid, reason string) error {
	ctx, cancel := c.call()
	defer cancel()
	resp, err := c.admin.KickDevice(ctx, &adminv1.KickDeviceRequest{Devid: devid, Reason: reason})
	if err != nil {
		return err
	}
	if c.json {
		if err := writeJSON(c.out, resp); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(c.out, "kicked %s of %s\n", plural(int64(len(resp.GetKicked())), "connection"), devid)
		renderConns(c.out, resp.GetKicked(), time.Now())
		if p := partialLine(resp.GetPartial()); p != "" {
			fmt.Fprintln(c.out, p)
		}
	}
	if len(resp.GetKicked()) == 0 {
		return errNoConnection
	}
	return nil
}

// conns pages until limit rows (0: all) or the last page.
func (c *ctlRun) conns(req *adminv1.ListConnectionsRequest, limit int) error {
	if limit < 0 {
		return usagef("--limit must not be negative")
	}
	if req.MinAge.AsDuration() < 0 {
		return usagef("--min-age must not be negative")
	}
	all := &adminv1.ListConnectionsResponse{Partial: &adminv1.Partial{Errors: map[string]string{}}}
	for {
		req.PageSize = 0
		if limit > 0 {
			req.PageSize = int32(min(limit-len(all.Connections), 1000))
		}
		ctx, cancel := c.call()
		resp, err := c.admin.ListConnections(ctx, req)
		cancel()
		if err != nil {
			return err
		}
		all.Connections = append(all.Connections, resp.GetConnections()...)
		if resp.GetPartial().GetPartial() {
			all.Partial.Partial = true
			for id, e := range resp.GetPartial().GetErrors() {
				all.Partial.Errors[id] = e
			}
		}
		all.NextPageToken = resp.GetNextPageToken()
		if all.NextPageToken == "" || (limit > 0 && len(all.Connections) >= limit) {
			break
		}
		req.PageToken = all.NextPageToken
	}
	if c.json {
		return writeJSON(c.out, all)
	}
	renderConns(c.out, all.Connections, time.Now())
	if all.NextPageToken != "" {
		fmt.Fprintf(c.out, "(more: --limit %d cut the list)\n", limit)
	}
	if p := partialLine(all.Partial); p != "" {
		fmt.Fprintln(c.out, p)
	}
	return nil
}

func renderConns(w io.Writer, cs []*adminv1.Connection, now time.Time) {
	tw := newTable(w, "DEVICE", "GATEWAY", "BACKEND", "CLIENT", "AGE", "BYTES IN", "BYTES OUT", "TRIES", "MOVES")
	for _, k := range cs {
		row(tw, k.GetDevid(), k.GetGateway(), k.GetBackend(), orDash(k.GetClientAddr()),
			fmtDur(now.Sub(k.GetSince().AsTime())), k.GetBytesIn(), k.GetBytesOut(), k.GetTries(), k.GetMoves())
	}
	tw.Flush()
}
