package sim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Report is what a Run saw.
type Report struct {
	// Devices is how many devices were configured; Connections counts the
	// connections that completed login and heartbeats; Failed counts the
	// connections that did not (each also counted in Errors).
	Devices, Connections, Failed int

	// PerBackend counts devices by the backend of their first successful
	// connection.
	PerBackend map[string]int

	// Sticky counts devices whose successful connections all landed on one
	// backend; Moved those that landed on more than one. A device with no
	// successful connection is in neither.
	Sticky int
	Moved  int

	// Errors counts failed connections by reason, "<stage>_<kind>", e.g.
	// "dial_refused", "login_timeout", "heartbeat_closed", "canceled".
	Errors map[string]int

	// Backends is set when Config.RecordBackends is: Backends[i] lists, for
	// device i (Config.DeviceID(i)), the backend that answered each of its
	// connections in order, "" for a connection that failed.
	Backends [][]string `json:",omitempty"`

	// MaxOverMean is max/mean of PerBackend: 1 is perfect balance.
	MaxOverMean float64

	Elapsed time.Duration
}

func summarize(devs []deviceResult, errs []map[string]int) Report {
	r := Report{
		Devices:    len(devs),
		PerBackend: map[string]int{},
		Errors:     map[string]int{},
	}
	for _, d := range devs {
		r.Connections += d.ok
		r.Failed += d.failed
		if d.ok == 0 {
			continue
		}
		r.PerBackend[d.first]++
		if d.moved {
			r.Moved++
		} else {
			r.Sticky++
		}
	}
	for _, m := range errs {
		for k, v := range m {
			r.Errors[k] += v
		}
	}
	if len(r.PerBackend) > 0 {
		total, most := 0, 0
		for _, n := range r.PerBackend {
			total += n
			most = max(most, n)
		}
		r.MaxOverMean = float64(most) / (float64(total) / float64(len(r.PerBackend)))
	}
	return r
}

// failure names why a connection failed at stage.
func failure(ctx context.Context, stage string, err error) string {
	var ne net.Error
	switch {
	case ctx.Err() != nil:
		// Checked first: cancelling closes the connection, which would
		// otherwise read as "closed".
		return "canceled"
	case errors.Is(err, syscall.ECONNREFUSED):
		return stage + "_refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return stage + "_reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return stage + "_closed"
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		return stage + "_timeout"
	case errors.Is(err, errWrongType):
		return stage + "_wrong_type"
	case errors.Is(err, ErrBodyTooLarge):
		return stage + "_body_too_large"
	}
	return stage + "_error"
}

// String is a readable summary: totals, a table of backends, stickiness and
// errors, in a stable order.
func (r Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "devices %d, connections %d, failed %d, elapsed %s\n",
		r.Devices, r.Connections, r.Failed, r.Elapsed.Round(time.Millisecond))

	total, width := 0, len("backend")
	for id, n := range r.PerBackend {
		total += n
		width = max(width, len(id))
	}
	if total > 0 {
		fmt.Fprintf(&b, "  %-*s %8s %7s\n", width, "backend", "devices", "share")
		for _, id := range slices.Sorted(maps.Keys(r.PerBackend)) {
			n := r.PerBackend[id]
			fmt.Fprintf(&b, "  %-*s %8d %6.1f%%\n", width, printable(id), n, pct(n, total))
		}
	}
	fmt.Fprintf(&b, "sticky %d/%d (%.1f%%), moved %d, max/mean %.3f\n",
		r.Sticky, total, pct(r.Sticky, total), r.Moved, r.MaxOverMean)
	if len(r.Errors) > 0 {
		b.WriteString("errors:\n")
		for _, k := range slices.Sorted(maps.Keys(r.Errors)) {
			fmt.Fprintf(&b, "  %s %d\n", k, r.Errors[k])
		}
	}
	return b.String()
}

func pct(n, total int) float64 {
	if total == 0 {
		return 0
	}
	return 100 * float64(n) / float64(total)
}

// printable replaces bytes outside printable ASCII: backend ids come from
// the replies of whatever answered.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e {
			return '?'
		}
		return r
	}, s)
}
