package main

import (
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminv1 "github.com/devgate/devgate/api/devgate/admin/v1"
)

func gp(id string, misplaced, evicted int64, done bool) *adminv1.GatewayProgress {
	return &adminv1.GatewayProgress{Gateway: id, Misplaced: misplaced, Evicted: evicted, Done: done}
}

func TestCtlRebalance(t *testing.T) {
	f := &fakeAdmin{progress: []*adminv1.RebalanceProgress{
		{Misplaced: 30, Gateways: []*adminv1.GatewayProgress{gp("gw1", 12, 0, false), gp("gw2", 18, 0, false)}},
		{Misplaced: 30, Evicted: 14, Gateways: []*adminv1.GatewayProgress{gp("gw1", 12, 6, false), gp("gw2", 18, 8, false)}},
		{Misplaced: 30, Evicted: 30, Done: true, Gateways: []*adminv1.GatewayProgress{gp("gw1", 12, 12, true), gp("gw2", 18, 18, true)}},
	}}
	addr := startFake(t, f)
	out, _, code := ctl(t, "--addr", addr, "--token", "t", "rebalance", "--pace", "20")
	want := `misplaced 30 moved 0 evicted 0 (gw1 0/12, gw2 0/18)
misplaced 30 moved 0 evicted 14 (gw1 6/12, gw2 8/18)
misplaced 30 moved 0 evicted 30 (gw1 12/12, gw2 18/18)
rebalance done: moved 0, evicted 30 of 30 misplaced connections on 2 gateways
`
	if code != 0 || out != want {
		t.Fatalf("exit %d, output:\n%s\nwant:\n%s", code, out, want)
	}
	// Under --json: progress on stderr, the last message on stdout.
	out, errOut, code := ctl(t, "--addr", addr, "--token", "t", "rebalance", "--dry-run", "--json")
	if code != 0 || !strings.Contains(out, `"done": true`) || strings.Contains(out, "misplaced 30") || !strings.Contains(errOut, "misplaced 30 moved 0 evicted 30") {
		t.Fatalf("exit %d, stdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	assertRequests(t, f, &adminv1.RebalanceRequest{EvictPerSecond: 20}, &adminv1.RebalanceRequest{DryRun: true})
	if f.auth[0] != "Bearer t" {
		t.Errorf("stream authorization %q", f.auth[0])
	}
}

func TestCtlRebalanceIncomplete(t *testing.T) {
	failed := gp("gw3", 0, 0, true)
	failed.Error = "connection refused"
	f := &fakeAdmin{progress: []*adminv1.RebalanceProgress{{Misplaced: 12, Done: true,
		Gateways: []*adminv1.GatewayProgress{gp("gw1", 12, 0, true), failed},
		Partial:  &adminv1.Partial{Partial: true, Errors: map[string]string{"gw3": "connection refused"}}}}}
	addr := startFake(t, f)
	out, errOut, code := ctl(t, "--addr", addr, "rebalance", "--dry-run")
	want := `misplaced 12 moved 0 evicted 0 (gw1 0/12, gw3 0/0 failed)
dry run: 12 misplaced connections (gw1 12, gw3 0); nothing was moved or evicted
PARTIAL: gateways gw3 did not answer: gw3: connection refused
`
	if code != 1 || out != want || errOut != "devgate ctl rebalance: rebalance incomplete: gw3 did not finish\n" {
		t.Fatalf("exit %d, output:\n%s\nwant:\n%s\nstderr: %s", code, out, want, errOut)
	}
}

func TestCtlRebalanceSilentStream(t *testing.T) {
	f := &fakeAdmin{hang: true, progress: []*adminv1.RebalanceProgress{{Misplaced: 5}}}
	addr := startFake(t, f)
	_, errOut, code := ctl(t, "--addr", addr, "--timeout", "200ms", "rebalance")
	if code != 1 || !strings.Contains(errOut, "sent no progress for 200ms (--timeout)") {
		t.Fatalf("exit %d, stderr: %s", code, errOut)
	}
}

func TestCtlErrors(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	for _, tc := range []struct {
		name string
		err  error
		args []string
		want string
	}{
		{"unauthenticated", status.Error(codes.Unauthenticated, "a bearer token or a client certificate is required"),
			[]string{"backends"}, "devgate ctl backends: not authenticated: pass --token or a client certificate\n"},
		{"permission", status.Error(codes.PermissionDenied, "this call needs the admin role"),
			[]string{"drain", "b1"}, "devgate ctl drain: permission denied: this needs the admin role\n"},
		{"stream permission", status.Error(codes.PermissionDenied, "this call needs the admin role"),
			[]string{"rebalance"}, "devgate ctl rebalance: permission denied: this needs the admin role\n"},
		{"not found", status.Error(codes.NotFound, `backend "b9" is not registered`),
			[]string{"undrain", "b9"}, "devgate ctl undrain: not found: backend \"b9\" is not registered\n"},
		{"unavailable", nil, []string{"--addr", closed, "gateways"}, "devgate ctl gateways: cannot reach " + closed + ": "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := startFake(t, &fakeAdmin{err: tc.err})
			out, errOut, code := ctl(t, append([]string{"--addr", addr}, tc.args...)...)
			if code != 1 || out != "" || !strings.HasPrefix(errOut, tc.want) {
				t.Fatalf("exit %d, stdout %q, stderr %q; want stderr %q", code, out, errOut, tc.want)
			}
		})
	}
}

func TestCtlUsage(t *testing.T) {
	startFake(t, &fakeAdmin{}) // only for the leak check and a clean environment
	for _, tc := range []struct {
		args      []string
		code      int
		stdout    string // help goes to stdout
		stderr    string // errors to stderr, one line and a hint
		stderrLen int    // lines in stderr; 0: not checked
	}{
		{nil, 2, "", "devgate ctl VERB [flags]", 0},
		{[]string{"-h"}, 0, "exit codes: 0 ok, 1 the call failed, 2 usage, 130 interrupted", "", 0},
		{[]string{"help", "drain"}, 0, "devgate ctl drain ID [--deadline 30s]", "", 0},
		{[]string{"drain", "-h"}, 0, "--reason string", "", 0},
		{[]string{"drain", "--help"}, 0, "--addr string", "", 0}, // the global flags too
		{[]string{"frob"}, 2, "", `devgate ctl: unknown verb "frob"`, 2},
		{[]string{"drian"}, 2, "", `unknown verb "drian" (did you mean drain?)`, 2},
		{[]string{"drain"}, 2, "", `devgate ctl drain: want ID, got []`, 2},
		{[]string{"drain", "b1", "b2"}, 2, "", `want ID, got ["b1" "b2"]`, 2},
		{[]string{"backends", "extra"}, 2, "", `takes no arguments, got ["extra"]`, 2},
		{[]string{"drain", "b1", "--deadline", "soon"}, 2, "", `devgate ctl drain: invalid argument "soon" for "--deadline" flag`, 2},
		{[]string{"drain", "b1", "--wiat"}, 2, "", "devgate ctl drain: unknown flag: --wiat\nRun 'devgate ctl drain --help' for usage.\n", 2},
		{[]string{"drain", "b1", "--pace", "-1"}, 2, "", "--pace must not be negative", 2},
		{[]string{"drain", "b1", "--deadline", "-1s"}, 2, "", "--deadline must not be negative", 2},
		{[]string{"lookup", "d1", "--fallbacks", "5000"}, 2, "", "at most 1000", 2},
		{[]string{"--cert", "c.pem", "backends"}, 2, "", "--cert and --key go together", 2},
		{[]string{"--insecure", "--cacert", "ca.pem", "backends"}, 2, "", "--insecure contradicts", 2},
		{[]string{"backends", "--timeout", "0s"}, 2, "", "--timeout must be positive", 2},
		{[]string{"--cacert", "/nonexistent/ca.pem", "backends"}, 1, "", "admin CA: open /nonexistent/ca.pem", 1},
	} {
		out, errOut, code := ctl(t, tc.args...)
		lines := strings.Count(errOut, "\n")
		if code != tc.code || !strings.Contains(out, tc.stdout) || tc.stdout == "" && out != "" ||
			!strings.Contains(errOut, tc.stderr) || tc.stderr == "" && errOut != "" || tc.stderrLen > 0 && lines != tc.stderrLen {
			t.Errorf("ctl %q: exit %d, stdout:\n%s\nstderr:\n%s\nwant exit %d, stdout with %q, stderr with %q in %d lines",
				tc.args, code, out, errOut, tc.code, tc.stdout, tc.stderr, tc.stderrLen)
		}
	}
}

// Flags go anywhere among the arguments, as operators type them; "--"
// ends the flags.
func TestCtlInterspersed(t *testing.T) {
	f := &fakeAdmin{lookup: &adminv1.LookupResponse{Owner: "b1", Order: []string{"b1"}}}
	addr := startFake(t, f)
	if _, _, code := ctl(t, "lookup", "--addr", addr, "--", "--dev"); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if _, _, code := ctl(t, "-addr", addr, "lookup", "d1", "-json"); code != 0 { // one dash, as the flag package took them
		t.Fatalf("exit %d", code)
	}
	assertRequests(t, f, &adminv1.LookupRequest{Devid: "--dev"}, &adminv1.LookupRequest{Devid: "d1"})
}

func TestFmtDur(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "0s", 850 * time.Millisecond: "850ms", 3240 * time.Millisecond: "3.2s", 42 * time.Second: "42s",
		12*time.Minute + 5*time.Second: "12m5s", time.Hour - 300*time.Millisecond: "1h0m",
		3*time.Hour + 12*time.Minute + 7*time.Second: "3h12m", 9*24*time.Hour + 4*time.Hour: "9d4h",
	} {
		if got := fmtDur(d); got != want {
			t.Errorf("fmtDur(%v) = %q, want %q", d, got, want)
		}
	}
}
