package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/template"
	"time"
)

// Loopback ports of the suite.
const (
	backendBase     = 19101 // backends on 19101..
	numBackends     = 3
	adminHTTP       = "127.0.0.1:19091" // devgate's pprof
	adminHTTPRehome = "127.0.0.1:19092" // devgate-rehome's
	adminHTTP1t     = "127.0.0.1:19093" // devgate-1t's
	// defaultThreads is HAProxy's nbthread and devgate's GOMAXPROCS unless a
	// target says otherwise: matched, so that CPU per operation compares.
	defaultThreads = 2
)

// proxySpec is a target of the suite: which proxy, its config and threads.
type proxySpec struct {
	kind    string // devgate, haproxy (native json_query), haproxy-lua, nginx
	addr    string
	admin   string // devgate's admin HTTP
	threads int    // HAProxy nbthread, devgate GOMAXPROCS; 0: defaultThreads
	rehome  bool   // devgate with rehome: {enabled: true}
}

var proxySpecs = map[string]proxySpec{
	"devgate":    {kind: "devgate", addr: "127.0.0.1:19000", admin: adminHTTP},
	"devgate-1t": {kind: "devgate", addr: "127.0.0.1:19004", admin: adminHTTP1t, threads: 1},
	// devgate with moves on: what keeping the login and following frames costs.
	"devgate-rehome": {kind: "devgate", addr: "127.0.0.1:19003", admin: adminHTTPRehome, rehome: true},
	// HAProxy at its best (issue 17): native json_query, no Lua; 2 and 1 threads.
	"haproxy":    {kind: "haproxy", addr: "127.0.0.1:19001"},
	"haproxy-1t": {kind: "haproxy", addr: "127.0.0.1:19005", threads: 1},
	// The Lua fetch of issue 4, the anchor before issue 17.
	"haproxy-lua": {kind: "haproxy-lua", addr: "127.0.0.1:19006"},
	"nginx":       {kind: "nginx", addr: "127.0.0.1:19002"},
}

type backendAddr struct{ ID, Addr string }

// bench owns every process of a run.
type bench struct {
	o        options
	dir      string
	backends []*exec.Cmd
	proxies  map[string]*exec.Cmd
	targets  []string        // proxies that started
	storm    []*stormBackend // the storm run's backends (stormbe.go)
}

func (b *bench) backendList() []backendAddr {
	var l []backendAddr
	for i := range numBackends {
		l = append(l, backendAddr{fmt.Sprintf("netty-%d", i+1), fmt.Sprintf("127.0.0.1:%d", backendBase+i)})
	}
	return l
}

// addrs is what a load process dials for target t.
func (b *bench) addrs(t string) string {
	if t == "direct" {
		var a []string
		for _, be := range b.backendList() {
			a = append(a, be.Addr)
		}
		return strings.Join(a, ",")
	}
	return proxySpecs[t].addr
}

func (b *bench) startBackends(ctx context.Context) error {
	for _, be := range b.backendList() {
		cmd := exec.CommandContext(ctx, b.o.devgate, "backend", "--id", be.ID, "--listen", be.Addr, "--log-level", "error")
		if err := b.start(cmd, "backend-"+be.ID); err != nil {
			return err
		}
		b.backends = append(b.backends, cmd)
		if err := waitListening(be.Addr); err != nil {
			return err
		}
	}
	return nil
}

// start starts cmd with its output in the run directory.
func (b *bench) start(cmd *exec.Cmd, name string) error {
	f, err := os.Create(filepath.Join(b.dir, name+".log"))
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	return nil
}

// stop ends cmd's process group and waits for it.
func stop(cmd *exec.Cmd) {
	if cmd == nil || cmd.Process == nil {
		return
	}
	syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}

func (b *bench) stopAll() {
	for _, c := range b.proxies {
		stop(c)
	}
	for _, c := range b.backends {
		stop(c)
	}
	stopStormBackends(b.storm)
}

// render fills template src/name.tmpl into the run directory (or the
// directory given as extra "Dir").
func (b *bench) render(name, listen string, extra ...any) (string, error) {
	t, err := template.ParseFiles(filepath.Join(b.o.src, name+".tmpl"))
	if err != nil {
		return "", err
	}
	data := map[string]any{
		"Dir": b.dir, "Src": b.o.src, "Listen": listen, "AdminHTTP": adminHTTP, "Backends": b.backendList(),
		"Threads": defaultThreads,
	}
	for i := 0; i+1 < len(extra); i += 2 { // name, value pairs
		data[extra[i].(string)] = extra[i+1]
	}
	if n, _ := data["Threads"].(int); n <= 0 {
		data["Threads"] = defaultThreads
	}
	path := filepath.Join(data["Dir"].(string), name)
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	return path, t.Execute(f, data)
}

// startProxy (re)starts proxy name and waits until it routes a device.
func (b *bench) startProxy(ctx context.Context, name string) error {
	if b.proxies == nil {
		b.proxies = map[string]*exec.Cmd{}
	}
	stop(b.proxies[name])
	delete(b.proxies, name)
	sp, ok := proxySpecs[name]
	if !ok {
		return fmt.Errorf("unknown proxy %q", name)
	}
	// A directory per target: haproxy and haproxy-1t render the same template.
	dir := filepath.Join(b.dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	cmd, err := b.launch(ctx, name, sp.kind, sp.addr, sp.admin, "Dir", dir, "Rehome", sp.rehome, "Threads", sp.threads)
	if err != nil {
		return err
	}
	b.proxies[name] = cmd
	return nil
}

// launch starts a proxy of kind (devgate, haproxy, haproxy-lua, nginx) named
// name on listen, its config rendered with extra template data ("Threads":
// HAProxy's nbthread, devgate's GOMAXPROCS), and waits until it routes a
// device.
func (b *bench) launch(ctx context.Context, name, kind, listen, admin string, extra ...any) (*exec.Cmd, error) {
	dir, threads := b.dir, defaultThreads
	for i := 0; i+1 < len(extra); i += 2 {
		switch extra[i] {
		case "Dir":
			dir = extra[i+1].(string)
		case "Threads":
			if n, _ := extra[i+1].(int); n > 0 {
				threads = n
			}
		}
	}
	var cmd *exec.Cmd
	switch kind {
	case "devgate":
		cfg, err := b.render("devgate.yaml", listen, append(extra, "AdminHTTP", admin)...)
		if err != nil {
			return nil, err
		}
		cmd = exec.CommandContext(ctx, b.o.devgate, "serve", "--config", cfg)
		cmd.Env = append(os.Environ(), "GOMAXPROCS="+strconv.Itoa(threads))
	case "haproxy", "haproxy-lua":
		if _, err := exec.LookPath("haproxy"); err != nil {
			return nil, err
		}
		if kind == "haproxy-lua" {
			if err := copyFile(filepath.Join(b.o.src, "devid.lua"), filepath.Join(dir, "devid.lua")); err != nil {
				return nil, err
			}
		}
		cfg, err := b.render(kind+".cfg", listen, extra...)
		if err != nil {
			return nil, err
		}
		// -c first: a config HAProxy refuses says why, not "not listening".
		if out, err := exec.Command("haproxy", "-c", "-q", "-f", cfg).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("haproxy -c %s: %w: %s", cfg, err, out)
		}
		cmd = exec.CommandContext(ctx, "haproxy", "-db", "-f", cfg)
	case "nginx":
		if _, err := exec.LookPath("nginx"); err != nil {
			return nil, err
		}
		if _, err := os.Stat("/usr/lib/nginx/modules/ngx_stream_js_module.so"); err != nil {
			return nil, fmt.Errorf("njs stream module missing (apt-get install libnginx-mod-stream-js): %w", err)
		}
		cfg, err := b.render("nginx.conf", listen, extra...)
		if err != nil {
			return nil, err
		}
		cmd = exec.CommandContext(ctx, "nginx", "-c", cfg, "-e", filepath.Join(dir, "nginx-error.log"))
	default:
		return nil, fmt.Errorf("unknown proxy %q", name)
	}
	if err := b.start(cmd, name); err != nil {
		return nil, err
	}
	if err := waitListening(listen); err != nil {
		stop(cmd)
		return nil, err
	}
	// One device end to end proves the config routes.
	out, err := exec.Command(b.o.devgate, "load", "--mode", "pingpong", "--target", listen,
		"--concurrency", "1", "--duration", "100ms", "--timeout", "3s").Output()
	if err != nil || !strings.Contains(string(out), `"failed":0`) {
		stop(cmd)
		logs, _ := os.ReadFile(filepath.Join(b.dir, name+".log"))
		return nil, fmt.Errorf("%s does not route: %v %s %s", name, err, out, logs)
	}
	return cmd, nil
}

func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o644)
}

func waitListening(addr string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not listening: %w", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// procStats is the RSS (KiB) and open files of a process and its children
// (nginx workers).
type procStats struct{ RSSKB, FDs int }

func statsTree(pid int) procStats {
	var s procStats
	for _, p := range append([]int{pid}, children(pid)...) {
		s.RSSKB += vmRSS(p)
		if ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p)); err == nil {
			s.FDs += len(ents)
		}
	}
	return s
}

// cpuTree is the CPU time in ms (user + system) of pid and its children.
func cpuTree(pid int) float64 {
	if pid == 0 {
		return 0
	}
	var ticks int
	for _, p := range append([]int{pid}, children(pid)...) {
		f := statFields(p)
		if len(f) > 12 { // f[0] is field 3 (state): utime and stime are fields 14, 15
			u, _ := strconv.Atoi(f[11])
			s, _ := strconv.Atoi(f[12])
			ticks += u + s
		}
	}
	return float64(ticks) * 1000 / clockTicks
}

// clockTicks is USER_HZ, 100 on Linux for every architecture Go runs on.
const clockTicks = 100

// statFields splits /proc/pid/stat after the command name, which may hold
// spaces: f[0] is the state, f[1] the parent pid.
func statFields(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(s[i+1:])
}

func vmRSS(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				n, _ := strconv.Atoi(f[0])
				return n
			}
		}
	}
	return 0
}

// children lists the direct children of pid.
func children(pid int) []int {
	ents, _ := os.ReadDir("/proc")
	var kids []int
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if f := statFields(p); len(f) > 1 && f[1] == strconv.Itoa(pid) {
			kids = append(kids, p)
		}
	}
	return kids
}
