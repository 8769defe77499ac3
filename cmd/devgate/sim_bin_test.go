package main

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/devgate/devgate/internal/testkit"
)

// binProc is a child process whose output lines (stdout or stderr) are kept.
type binProc struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // of Wait, once done is closed

	mu    sync.Mutex
	lines []string
	out   strings.Builder // the other stream
}

// startBin starts bin; lines come from stderr if linesFromStderr, else
// stdout. Cleanup kills it by PID if it still runs.
func startBin(t *testing.T, bin string, linesFromStderr bool, args ...string) *binProc {
	t.Helper()
	p := &binProc{cmd: exec.Command(bin, args...), done: make(chan struct{})}
	pipe, err := p.cmd.StdoutPipe()
	if linesFromStderr {
		pipe, err = p.cmd.StderrPipe()
		p.cmd.Stdout = &lockedWriter{p: p}
	} else {
		p.cmd.Stderr = &lockedWriter{p: p}
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			p.mu.Unlock()
		}
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			syscall.Kill(p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
	})
	return p
}

type lockedWriter struct{ p *binProc }

func (w *lockedWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	return w.p.out.Write(b)
}

func (p *binProc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n") + "\n--- other stream:\n" + p.out.String()
}

// await waits up to 30 s for a line from index from on that match accepts,
// and returns it and the index after it.
func (p *binProc) await(t *testing.T, what string, from int, match func(string) bool) (string, int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		p.mu.Lock()
		for i := from; i < len(p.lines); i++ {
			if match(p.lines[i]) {
				l := p.lines[i]
				p.mu.Unlock()
				return l, i + 1
			}
		}
		p.mu.Unlock()
		select {
		case <-p.done:
			t.Fatalf("exited (%v) before %s; output:\n%s", p.err, what, p.output())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; output:\n%s", what, p.output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop sends SIGTERM and waits up to 20 s for the exit.
func (p *binProc) stop(t *testing.T) error {
	t.Helper()
	syscall.Kill(p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
		return p.err
	case <-time.After(20 * time.Second):
		t.Fatalf("no exit 20 s after SIGTERM; output:\n%s", p.output())
		return nil
	}
}

var backendCount = regexp.MustCompile(`\b(demo-\d+) (\d+) `)

// lineCounts parses the per-backend counts of a `sim --hold` status line.
func lineCounts(line string) map[string]int {
	out := map[string]int{}
	for _, m := range backendCount.FindAllStringSubmatch(line, -1) {
		n, _ := strconv.Atoi(m[2])
		out[m[1]] = n
	}
	return out
}

// TestSimDrainMovesBinary runs the README walk-through through the built
// binary: `devgate dev`, `devgate sim --check`, `devgate ctl drain`, then
// `ctl undrain`. The drained backend's devices move to the other backends
// and, after the undrain, back (dev's automatic rebalance), with no
// disconnect and every heartbeat answered once and in order, by a backend
// that saw the device's login.
func TestSimDrainMovesBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs processes")
	}
	bin := devgateBin(t)
	admin, adminHTTP := freePort(t), freePort(t)
	dev := startBin(t, bin, false, "dev", "--listen", "127.0.0.1:0", "--etcd-listen", freePort(t),
		"--admin-listen", admin, "--admin-http-listen", adminHTTP, "--log-level", "warn")
	metricsURL := "http://" + adminHTTP + "/metrics"
	line, _ := dev.await(t, "the gateway address", 0, func(l string) bool {
		return strings.HasPrefix(strings.TrimSpace(l), "gateway ")
	})
	gw := strings.Fields(line)[1]

	const devices = 300
	simp := startBin(t, bin, true, "sim", "--target", gw, "--devices", strconv.Itoa(devices), "--check",
		"--interval", "100ms", "--duration", "0", "--every", "200ms", "--json")
	all := "connected " + strconv.Itoa(devices) + "/" + strconv.Itoa(devices)
	line, next := simp.await(t, "every device connected", 0, func(l string) bool {
		return strings.Contains(l, all) && lineCounts(l)["demo-2"] > 0
	})
	before := lineCounts(line)
	if len(before) != 3 {
		t.Fatalf("want 3 backends in %q", line)
	}
	m0 := testkit.Scrape(t, metricsURL)
	if m0["devgate_connections_proxied"] != devices {
		t.Fatalf("proxied %v, want %d", m0["devgate_connections_proxied"], devices)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "ctl", "--addr", admin, "drain", "demo-2",
		"--deadline", "0s", "--pace", "200", "--wait").CombinedOutput()
	if err != nil {
		t.Fatalf("ctl drain: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), fmt.Sprintf("moved %d", before["demo-2"])) {
		t.Errorf("ctl drain says %q; want moved %d", out, before["demo-2"])
	}
	line, next = simp.await(t, "demo-2's devices on the others", next, func(l string) bool {
		c := lineCounts(l)
		return strings.Contains(l, all) && c["demo-2"] == 0 && c["demo-1"]+c["demo-3"] == devices
	})
	after := lineCounts(line)
	if after["demo-1"] < before["demo-1"] || after["demo-3"] < before["demo-3"] {
		t.Fatalf("before %v, after %v", before, after)
	}
	if out, err := exec.CommandContext(ctx, bin, "ctl", "--addr", admin, "undrain", "demo-2").CombinedOutput(); err != nil {
		t.Fatalf("ctl undrain: %v\n%s", err, out)
	}
	simp.await(t, "demo-2's devices home again (rebalance.auto)", next, func(l string) bool {
		c := lineCounts(l)
		return strings.Contains(l, all) && c["demo-2"] == before["demo-2"] && c["demo-1"] == before["demo-1"]
	})

	m := testkit.Scrape(t, metricsURL)
	for cause, want := range map[string]int{"drain": before["demo-2"], "rebalance": before["demo-2"]} {
		if got := m[`devgate_rehome_total{cause="`+cause+`",result="moved"}`]; got != float64(want) {
			t.Errorf("devgate_rehome_total{cause=%q,result=moved} = %v, want %d", cause, got, want)
		}
	}
	if got := m[`devgate_connections_closed_total{reason="evicted_drain"}`]; got != 0 {
		t.Errorf("%v devices evicted by the drain", got)
	}
	// The drain went through the admin gRPC server's metrics; the build
	// is labelled.
	drained := `grpc_server_handled_total{grpc_code="OK",grpc_method="DrainBackend",grpc_service="devgate.admin.v1.Admin",grpc_type="unary"}`
	if m[drained] != 1 {
		t.Errorf("%s = %v", drained, m[drained])
	}
	found := false
	for k, v := range m {
		if strings.HasPrefix(k, "devgate_build_info{") && strings.Contains(k, `version="`+testVersion+`"`) && v == 1 {
			found = true
		}
	}
	if !found {
		t.Errorf("no devgate_build_info with version %s", testVersion)
	}

	syscall.Kill(simp.cmd.Process.Pid, syscall.SIGTERM)
	if err := waitExit(t, simp, 30*time.Second); err != nil {
		t.Fatalf("sim --check: %v\n%s", err, simp.output())
	}
	r := simReport(t, simp)
	moves := 0
	for k, n := range r.Moves {
		from, to, _ := strings.Cut(k, ">")
		if (from == "demo-2") == (to == "demo-2") {
			t.Errorf("%d devices moved %s: only demo-2's should move, and back", n, k)
		}
		moves += n
	}
	t.Logf("sim: sent %d, answered %d, switches %d, pause p50 %v p99 %v max %v", r.Sent, r.Answered, r.Switches,
		r.PauseP50, r.PauseP99, r.PauseMax)
	if !r.Clean || r.Disconnects != 0 || r.Switches != int64(2*before["demo-2"]) || int64(moves) != r.Switches {
		t.Fatalf("report %+v", r)
	}
	// Text mode: live lines and, on ctrl-C, the summary; exit 0.
	text := startBin(t, bin, false, "sim", "--target", gw, "--devices", "20", "--hold", "0", "--every", "200ms")
	text.await(t, "a live line with every device", 0, func(l string) bool { return strings.Contains(l, "connected 20/20 |") })
	syscall.Kill(text.cmd.Process.Pid, syscall.SIGINT)
	select {
	case <-text.done:
	case <-time.After(20 * time.Second):
		t.Fatalf("sim did not exit 20 s after SIGINT:\n%s", text.output())
	}
	if text.err != nil {
		t.Fatalf("sim exit after SIGINT: %v\n%s", text.err, text.output())
	}
	text.await(t, "the summary", 0, func(l string) bool { return strings.HasPrefix(l, "held 20 devices for ") })

	if err := dev.stop(t); err != nil {
		t.Fatalf("dev exit: %v\n%s", err, dev.output())
	}
}
