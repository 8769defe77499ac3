package main

import (
	"fmt"
	"io"
	"slices"

	adminv1 "github.com/devgate/devgate/api/devgate/admin/v1"
)

// writeEjections prints, under ctl backends, one line per backend ejected
// on a gateway: "ejected b2 on gw-1: 3 failed dials, next trial in 2s
// (backoff 4s), ejected 2 times".
func writeEjections(w io.Writer, bs []*adminv1.Backend) {
	for _, b := range bs {
		gws := make([]string, 0, len(b.GetEjectionsByGateway()))
		for g := range b.GetEjectionsByGateway() {
			gws = append(gws, g)
		}
		slices.Sort(gws)
		for _, g := range gws {
			e := b.GetEjectionsByGateway()[g]
			if !e.GetEjected() {
				continue
			}
			fmt.Fprintf(w, "ejected %s on %s: %s, next trial in %s (backoff %s), ejected %s\n", b.GetId(), g,
				plural(int64(e.GetFailures()), "failed dial"), fmtDur(e.GetRemaining().AsDuration()),
				fmtDur(e.GetBackoff().AsDuration()), plural(int64(e.GetEjections()), "time"))
		}
	}
}
