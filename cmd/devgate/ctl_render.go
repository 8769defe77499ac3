package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"

	adminv1 "github.com/devgate/devgate/api/devgate/admin/v1"
)

// writeJSON prints m as one indented document with every field present,
// under the proto field names (ring_share, evict_per_second...). 64-bit
// integers are JSON numbers, not the strings protojson writes, so jq and
// scripts can compare them; keys are sorted.
func writeJSON(w io.Writer, m proto.Message) error {
	b, err := protojson.MarshalOptions{EmitUnpopulated: true, UseProtoNames: true}.Marshal(m)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return err
	}
	int64sAsNumbers(m.ProtoReflect().Descriptor(), doc)
	out, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(out, '\n'))
	return err
}

// int64sAsNumbers turns the strings protojson writes for 64-bit integer
// fields of md, at any depth, into numbers in the decoded document v.
func int64sAsNumbers(md protoreflect.MessageDescriptor, v any) {
	obj, ok := v.(map[string]any)
	if !ok || strings.HasPrefix(string(md.FullName()), "google.protobuf.") { // Duration, Timestamp: strings by design
		return
	}
	fields := md.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		val, ok := obj[string(fd.Name())]
		if !ok {
			continue
		}
		elem := fd
		switch {
		case fd.IsMap():
			elem = fd.MapValue()
			m, _ := val.(map[string]any)
			for k, x := range m {
				m[k] = fieldAsNumber(elem, x)
			}
			continue
		case fd.IsList():
			l, _ := val.([]any)
			for j, x := range l {
				l[j] = fieldAsNumber(elem, x)
			}
			continue
		}
		obj[string(fd.Name())] = fieldAsNumber(fd, val)
	}
}

// fieldAsNumber converts one value of field fd.
func fieldAsNumber(fd protoreflect.FieldDescriptor, v any) any {
	switch fd.Kind() {
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind,
		protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		if s, ok := v.(string); ok {
			return json.Number(s)
		}
	case protoreflect.MessageKind, protoreflect.GroupKind:
		int64sAsNumbers(fd.Message(), v)
	}
	return v
}

func newTable(w io.Writer, header ...string) *tabwriter.Writer {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	return tw
}

func row(tw *tabwriter.Writer, cols ...any) {
	for i, c := range cols {
		if i > 0 {
			fmt.Fprint(tw, "\t")
		}
		fmt.Fprint(tw, c)
	}
	fmt.Fprintln(tw)
}

func renderBackends(w io.Writer, resp *adminv1.ListBackendsResponse, now time.Time) {
	tw := newTable(w, "ID", "ADDR", "WEIGHT", "ZONE", "STATE", "SHARE", "CONNS")
	for _, b := range resp.GetBackends() {
		addr := b.GetAddr()
		if as := b.GetAddrs(); len(as) > 1 {
			addr = fmt.Sprintf("%s (+%d)", as[0], len(as)-1)
		}
		row(tw, b.GetId(), addr, b.GetWeight(), orDash(b.GetZone()), stateName(b.GetState()),
			fmt.Sprintf("%.1f%%", b.GetRingShare()*100), b.GetConnections())
	}
	tw.Flush()
	fmt.Fprintf(w, "revision %d\n", resp.GetRevision())
	for _, b := range resp.GetBackends() {
		if as := b.GetAddrs(); len(as) > 1 {
			fmt.Fprintf(w, "addresses of %s: %s\n", b.GetId(), strings.Join(as, " "))
		}
	}
	for _, b := range resp.GetBackends() {
		if b.GetDrain() != nil {
			line := drainLine(b, now)
			if r := b.GetDrain().GetReason(); r != "" {
				line += fmt.Sprintf(" reason %q", r)
			}
			fmt.Fprintln(w, line)
		}
	}
	writeEjections(w, resp.GetBackends())
	for _, b := range resp.GetBackends() {
		if a := b.GetAdmission(); a != nil {
			fmt.Fprintf(w, "pacing %s: %.1f logins/s, %s, %d admitted\n", b.GetId(),
				a.GetRate(), plural(a.GetWaiting(), "waiting device"), a.GetAdmitted())
		}
	}
	if p := partialLine(resp.GetPartial()); p != "" {
		fmt.Fprintln(w, p)
	}
}

func stateName(s adminv1.BackendState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "BACKEND_STATE_"))
}

// drainLine is one line of drain progress: "draining ID: N connections
// left (deadline in Xs | moving or evicting at P/s; moved M, evicted E)".
func drainLine(b *adminv1.Backend, now time.Time) string {
	s := fmt.Sprintf("draining %s: %s left", b.GetId(), plural(b.GetConnections(), "connection"))
	d := b.GetDrain()
	if d == nil {
		return s
	}
	if left := d.GetDeadline().AsTime().Sub(now); d.GetDeadline() != nil && left > 0 {
		return s + fmt.Sprintf(" (deadline in %s)", fmtDur(left))
	}
	s += " (moving or evicting at " + paceText(d.GetEvictPerSecond())
	if p := b.GetDrainProgress(); p != nil {
		s += "; " + movedText(p.GetMoved(), p.GetEvicted(), p.GetGone())
	}
	return s + ")"
}

// movedText is "moved M, evicted E" and ", G gone" when devices left mid-move.
func movedText(moved, evicted, gone int64) string {
	s := fmt.Sprintf("moved %d, evicted %d", moved, evicted)
	if gone > 0 {
		s += fmt.Sprintf(", %d gone", gone)
	}
	return s
}

func renderDrain(w io.Writer, id string, d *adminv1.Drain, unconfirmed map[string]string, now time.Time) {
	if len(unconfirmed) == 0 {
		fmt.Fprintf(w, "draining %s: out of the ring on every gateway now\n", id)
	} else {
		fmt.Fprintf(w, "draining %s: stored in etcd, out of the ring on the gateways that confirmed\n", id)
		writeUnconfirmed(w, unconfirmed)
	}
	pace := paceText(d.GetEvictPerSecond())
	if left := d.GetDeadline().AsTime().Sub(now); d.GetDeadline() != nil && left > 0 {
		fmt.Fprintf(w, "connections stay until %s (in %s), then are moved or evicted at %s across the fleet\n",
			d.GetDeadline().AsTime().Local().Format("15:04:05 MST"), fmtDur(left), pace)
	} else {
		fmt.Fprintf(w, "connections are moved or evicted now at %s across the fleet\n", pace)
	}
	if r := d.GetReason(); r != "" {
		fmt.Fprintf(w, "reason: %s\n", r)
	}
}

func renderLookup(w io.Writer, devid string, r *adminv1.LookupResponse) {
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	owner := r.GetOwner()
	if owner == "" {
		owner = "(none: the ring is empty)"
	}
	var fallbacks []string
	if o := r.GetOrder(); len(o) > 1 {
		fallbacks = o[1:]
	}
	row(tw, "device", devid)
	row(tw, "owner", owner)
	row(tw, "fallbacks", orDash(strings.Join(fallbacks, ", ")))
	row(tw, "revision", r.GetRevision())
	row(tw, "gateway", r.GetGateway())
	tw.Flush()
}

func renderGateways(w io.Writer, resp *adminv1.ListGatewaysResponse) {
	tw := newTable(w, "ID", "ADMIN", "VERSION", "UPTIME", "CONNS", "REVISION", "STALENESS", "READY", "DRAINING")
	for _, g := range resp.GetGateways() {
		stale := fmtDurPB(g.GetEtcdStaleness())
		switch {
		case g.GetEtcdStaleness() == nil:
			stale = "- (no etcd)" // a static backend list
		case !g.GetEtcdConnected():
			stale += " (etcd down)"
		}
		row(tw, g.GetId(), orDash(g.GetAdmin()), orDash(g.GetVersion()), fmtDurPB(g.GetUptime()), g.GetConnections(),
			g.GetRingRevision(), stale, yesNo(g.GetReady()), yesNo(g.GetDraining()))
	}
	tw.Flush()
	fmt.Fprintln(w, consistencyLine(resp))
	if p := partialLine(resp.GetPartial()); p != "" {
		fmt.Fprintln(w, p)
	}
}

// consistencyLine shows the server's verdict and the revisions behind it:
// "consistent: no (revisions 41: gw-2; 42: gw-1,gw-3)".
func consistencyLine(resp *adminv1.ListGatewaysResponse) string {
	byRev := map[int64][]string{}
	for _, g := range resp.GetGateways() {
		byRev[g.GetRingRevision()] = append(byRev[g.GetRingRevision()], g.GetId())
	}
	revs := make([]int64, 0, len(byRev))
	for r := range byRev {
		revs = append(revs, r)
	}
	slices.Sort(revs)
	verdict := yesNo(resp.GetConsistent())
	switch len(revs) {
	case 0:
		return fmt.Sprintf("consistent: %s (no gateway answered)", verdict)
	case 1:
		return fmt.Sprintf("consistent: %s (revision %d on %s)", verdict, revs[0], joinSorted(byRev[revs[0]]))
	}
	parts := make([]string, len(revs))
	for i, r := range revs {
		parts[i] = fmt.Sprintf("%d: %s", r, joinSorted(byRev[r]))
	}
	return fmt.Sprintf("consistent: %s (revisions %s)", verdict, strings.Join(parts, "; "))
}

// rebalanceLine is "misplaced N moved M evicted E (gw1 a/b, gw2 c/d)", per
// gateway relocated (moved, evicted or gone)/misplaced.
func rebalanceLine(p *adminv1.RebalanceProgress) string {
	gws := make([]string, 0, len(p.GetGateways()))
	for _, g := range p.GetGateways() {
		s := fmt.Sprintf("%s %d/%d", g.GetGateway(), g.GetMoved()+g.GetEvicted()+g.GetGone(), g.GetMisplaced())
		if g.GetError() != "" {
			s += " failed"
		}
		gws = append(gws, s)
	}
	s := fmt.Sprintf("misplaced %d moved %d evicted %d", p.GetMisplaced(), p.GetMoved(), p.GetEvicted())
	if p.GetGone() > 0 {
		s += fmt.Sprintf(" gone %d", p.GetGone())
	}
	if len(gws) > 0 {
		s += " (" + strings.Join(gws, ", ") + ")"
	}
	return s
}

func renderRebalanceSummary(w io.Writer, p *adminv1.RebalanceProgress, dry bool) {
	if dry {
		gws := make([]string, 0, len(p.GetGateways()))
		for _, g := range p.GetGateways() {
			gws = append(gws, fmt.Sprintf("%s %d", g.GetGateway(), g.GetMisplaced()))
		}
		fmt.Fprintf(w, "dry run: %s (%s); nothing was moved or evicted\n",
			plural(p.GetMisplaced(), "misplaced connection"), strings.Join(gws, ", "))
	} else {
		fmt.Fprintf(w, "rebalance done: %s of %s on %s\n", movedText(p.GetMoved(), p.GetEvicted(), p.GetGone()),
			plural(p.GetMisplaced(), "misplaced connection"), plural(int64(len(p.GetGateways())), "gateway"))
	}
	for _, g := range p.GetGateways() {
		if _, listed := p.GetPartial().GetErrors()[g.GetGateway()]; g.GetError() != "" && !listed {
			fmt.Fprintf(w, "%s failed: %s\n", g.GetGateway(), g.GetError())
		}
	}
	if l := partialLine(p.GetPartial()); l != "" {
		fmt.Fprintln(w, l)
	}
}

// partialLine names the gateways a fleet-wide answer is missing:
// "PARTIAL: gateways x,y did not answer: x: why; y: why".
func partialLine(p *adminv1.Partial) string {
	if !p.GetPartial() {
		return ""
	}
	ids := sortedKeys(p.GetErrors())
	if len(ids) == 0 {
		return "PARTIAL: some gateways did not answer"
	}
	why := make([]string, len(ids))
	for i, id := range ids {
		why[i] = id + ": " + p.GetErrors()[id]
	}
	return fmt.Sprintf("PARTIAL: gateways %s did not answer: %s", strings.Join(ids, ","), strings.Join(why, "; "))
}

// partialNote marks a progress line whose counts miss some gateways.
func partialNote(p *adminv1.Partial) string {
	if !p.GetPartial() {
		return ""
	}
	return fmt.Sprintf(" [partial: %s did not answer]", orDash(strings.Join(sortedKeys(p.GetErrors()), ",")))
}

// fmtDur rounds to what a reader can use: 850ms, 3.2s, 42s, 12m5s, 3h12m, 9d4h.
// Each step rounds first, so 59m59.7s reads 1h0m.
func fmtDur(d time.Duration) string {
	const day = 24 * time.Hour
	switch {
	case d < 0:
		return "-" + fmtDur(-d)
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < 10*time.Second:
		return d.Round(100 * time.Millisecond).String()
	}
	if d = d.Round(time.Second); d < time.Hour {
		return d.String()
	}
	if d = d.Round(time.Minute); d < 2*day {
		return fmt.Sprintf("%dh%dm", d/time.Hour, d%time.Hour/time.Minute)
	}
	d = d.Round(time.Hour)
	return fmt.Sprintf("%dd%dh", d/day, d%day/time.Hour)
}

func fmtDurPB(d *durationpb.Duration) string {
	if d == nil {
		return "-"
	}
	return fmtDur(d.AsDuration())
}

func paceText(perSecond float64) string {
	if perSecond <= 0 {
		return "the server's default pace"
	}
	return fmt.Sprintf("%g/s", perSecond)
}

func plural(n int64, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func joinSorted(s []string) string {
	s = slices.Clone(s)
	slices.Sort(s)
	return strings.Join(s, ",")
}

// writeUnconfirmed names the gateways that did not confirm a change: they
// may still route as before it.
func writeUnconfirmed(w io.Writer, unconfirmed map[string]string) {
	for _, id := range sortedKeys(unconfirmed) {
		fmt.Fprintf(w, "NOT CONFIRMED by %s (it may still route as before): %s\n", id, unconfirmed[id])
	}
}

// unconfirmedError makes ctl exit non-zero when a change is stored but
// some gateways did not confirm it.
func unconfirmedError(unconfirmed map[string]string) error {
	if len(unconfirmed) == 0 {
		return nil
	}
	return fmt.Errorf("stored in etcd, but not confirmed by %s", joinSorted(sortedKeys(unconfirmed)))
}
