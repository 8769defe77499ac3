package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/devgate/devgate/internal/testkit"
	"github.com/devgate/devgate/pkg/sim"
)

// The HAProxy configurations of the suite, native (json_query) at 1 and 2
// threads and the Lua one, pass haproxy -c and route through a real
// haproxy: every device reaches a backend, the same one each time, also
// when its login frame arrives in two pieces.
func TestHAProxyConfigsRoute(t *testing.T) {
	if _, err := exec.LookPath("haproxy"); err != nil {
		t.Skip("haproxy not installed")
	}
	bs, err := startStormBackends(numBackends, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer stopStormBackends(bs)
	var bl []backendAddr
	for _, s := range bs {
		bl = append(bl, backendAddr{s.id, s.addr()})
	}
	for _, name := range []string{"haproxy", "haproxy-1t", "haproxy-lua"} {
		t.Run(name, func(t *testing.T) {
			sp := proxySpecs[name]
			dir := t.TempDir()
			b := &bench{o: options{src: ".."}, dir: dir}
			if sp.kind == "haproxy-lua" {
				if err := copyFile(filepath.Join("..", "devid.lua"), filepath.Join(dir, "devid.lua")); err != nil {
					t.Fatal(err)
				}
			}
			listen := freeAddr(t)
			cfg, err := b.render(sp.kind+".cfg", listen, "Backends", bl, "Threads", sp.threads)
			if err != nil {
				t.Fatal(err)
			}
			text, _ := os.ReadFile(cfg)
			threads := sp.threads
			if threads == 0 {
				threads = defaultThreads
			}
			if !strings.Contains(string(text), fmt.Sprintf("nbthread %d\n", threads)) {
				t.Fatalf("%s: no nbthread %d in\n%s", name, threads, text)
			}
			if lua := strings.Contains(string(text), "lua-load"); lua != (sp.kind == "haproxy-lua") {
				t.Fatalf("%s: Lua in the config is %v:\n%s", name, lua, text)
			}
			if out, err := exec.Command("haproxy", "-c", "-f", cfg).CombinedOutput(); err != nil {
				t.Fatalf("haproxy -c: %v: %s", err, out)
			}
			cmd := exec.Command("haproxy", "-db", "-f", cfg)
			if err := b.start(cmd, name); err != nil {
				t.Fatal(err)
			}
			defer stop(cmd)
			if err := waitListening(listen); err != nil {
				t.Fatal(err)
			}
			checkSticky(t, listen)
		})
	}
}

// checkSticky logs devices in twice through listen (the second time with
// the frame split) and wants the same backend each time, and more than one
// backend in all.
func checkSticky(t *testing.T, listen string) {
	t.Helper()
	const devices = 31 // not a multiple of the backends: round robin shows
	first := map[string]string{}
	used := map[string]bool{}
	for round := range 2 {
		for i := range devices {
			if round == 1 { // the other way round: an order-bound spread shows
				i = devices - 1 - i
			}
			devid := fmt.Sprintf("dev-%06d", i)
			be := login(t, listen, devid, round == 1)
			if round == 0 {
				first[devid] = be
				used[be] = true
			} else if be != first[devid] {
				t.Fatalf("%s reached %s, then %s", devid, first[devid], be)
			}
		}
	}
	if len(used) < 2 {
		t.Fatalf("%d devices all reached %v: not hashed on the devid", devices, used)
	}
}

// login sends one login frame for devid (split in two writes if asked) and
// returns the backend that answered.
func login(t *testing.T, addr, devid string, split bool) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	f := sim.AppendFrame(nil, sim.TypeLogin, 1, 0, []byte(`{"devid":"`+devid+`","token":"0123456789abcdef"}`))
	if split { // the proxy must wait for the whole frame (inspect-delay)
		if _, err := c.Write(f[:10]); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
		f = f[10:]
	}
	if _, err := c.Write(f); err != nil {
		t.Fatal(err)
	}
	typ, body, err := testkit.ReadFrame(c)
	if err != nil {
		t.Fatalf("%s: login reply: %v", devid, err)
	}
	var r struct{ Backend, Devid string }
	if err := json.Unmarshal(body, &r); err != nil || typ != sim.TypeLogin || r.Devid != devid || r.Backend == "" {
		t.Fatalf("%s: reply type %d %s (%v)", devid, typ, body, err)
	}
	return r.Backend
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
