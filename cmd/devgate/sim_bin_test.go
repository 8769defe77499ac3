package main

import (
	"bufio"
	"context"
	"encoding/json"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/devgate/devgate/internal/testkit"
	"github.com/devgate/devgate/pkg/sim"
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

// TestSimHoldDrainBinary runs the README walk-through through the built
// binary: `devgate dev`, `devgate sim --hold`, `devgate ctl drain`. The
// drained backend's devices show up on the other backends in sim's live
// lines and summary, and sim exits 0 on SIGTERM.
func TestSimHoldDrainBinary(t *testing.T) {
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
	simp := startBin(t, bin, true, "sim", "--target", gw, "--devices", strconv.Itoa(devices), "--hold", "0",
		"--interval", "1s", "--backoff-min", "300ms", "--backoff-max", "3s", "--every", "200ms", "--json")
	all := "connected " + strconv.Itoa(devices) + "/" + strconv.Itoa(devices)
	line, next := simp.await(t, "every device connected", 0, func(l string) bool {
		return strings.Contains(l, all) && lineCounts(l)["demo-2"] > 0
	})
	before := lineCounts(line)
	if len(before) != 3 {
		t.Fatalf("want 3 backends in %q", line)
	}

	// The held devices' heartbeats move devgate_bytes_total while every
	// connection stays open.
	in := `devgate_bytes_total{direction="in"}`
	m0 := testkit.Scrape(t, metricsURL)
	m1 := m0
	for deadline := time.Now().Add(30 * time.Second); m1[in] <= m0[in]; time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("bytes in stayed at %v with %v connections open", m0[in], m0["devgate_connections_proxied"])
		}
		m1 = testkit.Scrape(t, metricsURL)
	}
	if m0["devgate_connections_proxied"] != devices || m1["devgate_connections_proxied"] != devices {
		t.Fatalf("proxied %v then %v, want %d", m0["devgate_connections_proxied"], m1["devgate_connections_proxied"], devices)
	}
	if m1[`devgate_connections_closed_total{reason="client_closed"}`] != 0 {
		t.Fatalf("connections closed while holding: %v", m1)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "ctl", "--addr", admin, "drain", "demo-2",
		"--deadline", "0s", "--pace", "200", "--wait").CombinedOutput()
	if err != nil {
		t.Fatalf("ctl drain: %v\n%s", err, out)
	}
	line, _ = simp.await(t, "demo-2's devices back on the others", next, func(l string) bool {
		c := lineCounts(l)
		return strings.Contains(l, all) && c["demo-2"] == 0 && c["demo-1"]+c["demo-3"] == devices
	})
	after := lineCounts(line)
	if after["demo-1"] < before["demo-1"] || after["demo-3"] < before["demo-3"] ||
		after["demo-1"]+after["demo-3"] != devices {
		t.Fatalf("before %v, after %v", before, after)
	}

	// The drain went through the admin gRPC server's metrics; the build
	// is labelled.
	m := testkit.Scrape(t, metricsURL)
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

	if err := simp.stop(t); err != nil {
		t.Fatalf("sim exit: %v\n%s", err, simp.output())
	}
	var st sim.HoldStatus
	simp.mu.Lock()
	jsonOut := simp.out.String()
	simp.mu.Unlock()
	if err := json.Unmarshal([]byte(jsonOut), &st); err != nil {
		t.Fatalf("summary %q: %v", jsonOut, err)
	}
	moved := st.Moves["demo-2>demo-1"] + st.Moves["demo-2>demo-3"]
	if st.Connected != devices || st.PerBackend["demo-2"] != 0 || moved != before["demo-2"] || st.Moved != moved {
		t.Fatalf("drained demo-2 held %d; summary %+v", before["demo-2"], st)
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
