//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// proc is one child process, started and stopped by PID. Its stdout lines
// are kept for await; stderr goes to a log file in the suite's directory.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed when the process has been reaped

	mu    sync.Mutex
	lines []string
	seen  chan struct{} // replaced (closed) on every new stdout line
}

// startProc runs bin with args; t.Cleanup kills it (SIGKILL, by PID) if it
// is still running when the test ends.
func startProc(t *testing.T, dir, name, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, done: make(chan struct{}), seen: make(chan struct{})}
	p.logPath = filepath.Join(dir, name+".log")
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stderr = logf
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	fmt.Fprintf(logf, "=== %s pid %d: %s %s\n", name, p.cmd.Process.Pid, bin, strings.Join(args, " "))
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			close(p.seen)
			p.seen = make(chan struct{})
			p.mu.Unlock()
		}
		io.Copy(io.Discard, stdout)
		p.cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	t.Cleanup(func() { p.kill() })
	return p
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// signal sends sig to the process (by PID) if it still runs.
func (p *proc) signal(sig syscall.Signal) {
	if p.alive() {
		syscall.Kill(p.pid(), sig)
	}
}

// kill SIGKILLs the process (SIGCONT first, in case it is stopped) and
// waits until it is reaped.
func (p *proc) kill() {
	if p.alive() {
		syscall.Kill(p.pid(), syscall.SIGKILL)
		syscall.Kill(p.pid(), syscall.SIGCONT)
	}
	<-p.done
}

// stop sends SIGTERM and waits up to timeout, then SIGKILLs. It returns how
// long the process took to exit and whether it exited by itself.
func (p *proc) stop(timeout time.Duration) (time.Duration, bool) {
	start := time.Now()
	p.signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return time.Since(start), true
	case <-time.After(timeout):
		p.kill()
		return time.Since(start), false
	}
}

// await waits for a stdout line starting with prefix and returns it.
func (p *proc) await(t *testing.T, prefix string, timeout time.Duration) string {
	t.Helper()
	deadline := time.After(timeout)
	for i := 0; ; {
		p.mu.Lock()
		for ; i < len(p.lines); i++ {
			if strings.HasPrefix(p.lines[i], prefix) {
				l := p.lines[i]
				p.mu.Unlock()
				return l
			}
		}
		seen := p.seen
		p.mu.Unlock()
		select {
		case <-seen:
		case <-p.done:
			t.Fatalf("%s exited before printing %q\n%s", p.name, prefix, p.tail(30))
		case <-deadline:
			t.Fatalf("%s did not print %q within %v\n%s", p.name, prefix, timeout, p.tail(30))
		}
	}
}

// tail returns the last n lines of the process's stderr log.
func (p *proc) tail(n int) string {
	b, _ := os.ReadFile(p.logPath)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return p.name + " log:\n  " + strings.Join(lines, "\n  ")
}

// freeAddr returns a loopback address whose port was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// scrape reads a Prometheus text page into "name{labels}" -> value.
func scrape(addr string) (map[string]float64, error) {
	c := http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	m := map[string]float64{}
	for _, l := range bytes.Split(b, []byte("\n")) {
		if len(l) == 0 || l[0] == '#' {
			continue
		}
		i := bytes.LastIndexByte(l, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(string(l[i+1:]), 64)
		if err != nil {
			continue
		}
		m[string(l[:i])] = v
	}
	return m, nil
}

// eventually polls cond every 100 ms until it holds or timeout passes, and
// returns how long that took.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		if cond() {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
