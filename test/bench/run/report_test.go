package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// A run without hold (--modes churn,pingpong) still gets its plot.
func TestPlotWithoutHold(t *testing.T) {
	if _, err := exec.LookPath("gnuplot"); err != nil {
		t.Skip("gnuplot not installed")
	}
	var all []record
	for _, tg := range []string{"direct", "devgate", "haproxy"} {
		r := record{Rep: 1, Run: "churn", Target: tg}
		r.Load.ConnsPerSec, r.Load.P50us, r.Load.P99us, r.Load.Ok = 3000, 5000, 30000, 12000
		all = append(all, r)
	}
	o := options{churnConc: 32, pingConc: 64}
	tab := summarise(all, []string{"direct", "devgate", "haproxy"}, o)
	out := t.TempDir()
	if err := plot(tab, out, t.TempDir()); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(out, "plot.png")); err != nil || fi.Size() == 0 {
		t.Fatalf("plot.png: %v", err)
	}
	md := renderMarkdown(tab, o, nil, nil, nil)
	if !strings.Contains(md, "| devgate / haproxy |") || strings.Contains(md, "devgate-1t / haproxy-1t |") {
		t.Fatalf("ratio columns:\n%s", md)
	}
}

// The devgate / HAProxy columns pair matched threads.
func TestAnchorPairs(t *testing.T) {
	got := anchorPairs([]string{"direct", "devgate-1t", "devgate", "haproxy-1t", "haproxy", "haproxy-lua", "nginx"})
	want := [][2]string{{"devgate", "haproxy"}, {"devgate-1t", "haproxy-1t"}, {"devgate", "haproxy-lua"}}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
	if got := anchorPairs([]string{"direct", "devgate-1t", "haproxy"}); len(got) != 1 || got[0] != [2]string{"devgate", "haproxy"} {
		t.Fatalf("no pair run: got %v", got)
	}
}

// The met column judges each matched-thread pair run on its own.
func TestVerdictPerThreadPair(t *testing.T) {
	r := row{metric: metric{vs: func(d, h float64) bool { return d <= 0.8*h }},
		med: map[string]float64{"devgate": 70, "haproxy": 100, "devgate-1t": 90, "haproxy-1t": 100, "haproxy-lua": 200}}
	pairs := anchorPairs([]string{"devgate-1t", "devgate", "haproxy-1t", "haproxy", "haproxy-lua"})
	if got, want := r.verdict(pairs), "2t yes · 1t **no**"; got != want {
		t.Fatalf("verdict %q, want %q", got, want)
	}
	delete(r.med, "haproxy-1t")
	if got, want := r.verdict(pairs), "2t yes"; got != want {
		t.Fatalf("without haproxy-1t: verdict %q, want %q", got, want)
	}
}
