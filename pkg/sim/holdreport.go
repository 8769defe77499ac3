package sim

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// Line is the status on one line, for a live view once a second:
//
//	12s connected 1000/1000 | demo-1 334  demo-2 0  demo-3 666 | reconnects 333 moved 333 disconnected 0
func (s HoldStatus) Line() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%4s connected %d/%d |", s.Elapsed.Round(time.Second), s.Connected, s.Devices)
	for _, id := range slices.Sorted(maps.Keys(s.PerBackend)) {
		fmt.Fprintf(&b, " %s %d ", printable(id), s.PerBackend[id])
	}
	fmt.Fprintf(&b, "| reconnects %d moved %d disconnected %d", s.Reconnects, s.Moved, s.Disconnected())
	if n := sum(s.Errors); n > 0 {
		fmt.Fprintf(&b, " failed-attempts %d", n)
	}
	return b.String()
}

// String is a summary: devices per backend now, reconnects and moves, and
// why connections ended or attempts failed, in a stable order.
func (s HoldStatus) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "held %d devices for %s: connected %d, disconnected %d\n",
		s.Devices, s.Elapsed.Round(time.Millisecond), s.Connected, s.Disconnected())
	width := len("backend")
	for id := range s.PerBackend {
		width = max(width, len(id))
	}
	if len(s.PerBackend) > 0 {
		fmt.Fprintf(&b, "  %-*s %9s %7s\n", width, "backend", "connected", "share")
		for _, id := range slices.Sorted(maps.Keys(s.PerBackend)) {
			n := s.PerBackend[id]
			fmt.Fprintf(&b, "  %-*s %9d %6.1f%%\n", width, printable(id), n, pct(n, s.Connected))
		}
	}
	fmt.Fprintf(&b, "logins %d, reconnects %d, moved %d (reconnects that reached another backend than before)\n",
		s.Logins, s.Reconnects, s.Moved)
	writeCounts(&b, "moves (from > to):", s.Moves, func(k string) string { return strings.Replace(k, ">", " > ", 1) })
	writeCounts(&b, "connections ended (conn_closed: closed by the gateway or backend, e.g. evicted):", s.Drops, nil)
	writeCounts(&b, "failed attempts:", s.Errors, nil)
	return b.String()
}

func writeCounts(b *strings.Builder, title string, m map[string]int, name func(string) string) {
	if len(m) == 0 {
		return
	}
	b.WriteString(title + "\n")
	for _, k := range slices.Sorted(maps.Keys(m)) {
		label := printable(k)
		if name != nil {
			label = name(label)
		}
		fmt.Fprintf(b, "  %s %d\n", label, m[k])
	}
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}
