package main

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/devgate/devgate/internal/etcdserver"
	"github.com/devgate/devgate/pkg/registry"
)

// config check (the real binary) says what is wrong with dial.sourceAddrs.
func TestBinaryConfigCheckSourceAddrs(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "gw.yaml")
	for doc, wantErr := range map[string]string{
		"backends: [{id: b1, addr: '10.0.0.1:9000'}]\ndial: {sourceAddrs: ['fd00::1']}\n": ": backends[0] 10.0.0.1:9000, dial.sourceAddrs fd00::1: " +
			"dial.sourceAddrs and the backend are of different address families\n",
		"backends: [{id: b1, addr: '10.0.0.1:9000'}]\ndial: {sourceAddrs: [eth0]}\n":                                   `: dial.sourceAddrs[0] "eth0": not an IP address` + "\n",
		"backends: [{id: b1, addrs: ['10.0.0.1:9000', '10.0.0.1:9001']}]\ndial: {sourceAddrs: [10.0.1.1, 10.0.1.2]}\n": "",
	} {
		if err := os.WriteFile(f, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		_, errOut, code := runBin(t, "config", "check", f)
		if wantErr == "" {
			if code != 0 {
				t.Errorf("%s: exit %d, stderr %q", doc, code, errOut)
			}
			continue
		}
		if code != exitFailed || errOut != f+wantErr {
			t.Errorf("%s: exit %d, stderr %q, want exit %d, %q", doc, code, errOut, exitFailed, f+wantErr)
		}
	}
}

// register --addr repeated registers a backend with several ports.
func TestBinaryRegisterSeveralAddrs(t *testing.T) {
	s := etcdserver.StartT(t)
	cli := etcdserver.ClientT(t, s)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { l.Close() }()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	reg := exec.Command(devgateBin(t), "register", "--etcd", s.Endpoint(), "--prefix", "/t19", "--id", "netty-3",
		"--addr", "10.1.2.3:9000", "--addr", "10.1.2.3:9001", "--addr", "10.1.2.3:9002", "--check-addr", l.Addr().String(),
		"--check-interval", "100ms")
	if err := reg.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- reg.Wait() }()
	defer func() {
		reg.Process.Signal(syscall.SIGTERM) // by PID
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("register exited with %v", err)
			}
		case <-time.After(20 * time.Second):
			reg.Process.Kill()
			<-exited
			t.Error("register did not stop 20s after SIGTERM")
		}
	}()
	key := registry.Keys{Prefix: "/t19"}.Backend("netty-3")
	var v registry.BackendValue
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		resp, err := cli.Get(ctx, key)
		cancel()
		if err == nil && len(resp.Kvs) == 1 {
			if err := json.Unmarshal(resp.Kvs[0].Value, &v); err != nil {
				t.Fatal(err)
			}
			b, err := registry.ParseBackend("netty-3", resp.Kvs[0].Value)
			if err != nil {
				t.Fatal(err)
			}
			if want := []string{"10.1.2.3:9000", "10.1.2.3:9001", "10.1.2.3:9002"}; v.Addr != want[0] || !slices.Equal(b.Addrs, want) {
				t.Fatalf("registered %s: addr %q, parsed addrs %q; want %q", resp.Kvs[0].Value, v.Addr, b.Addrs, want)
			}
			return
		}
	}
	t.Fatal("netty-3 not registered within 20s")
}

// serve refuses to start with a source address this host does not have,
// rather than refusing every device as no_source_port.
func TestBinaryServeSourceAddrNotHere(t *testing.T) {
	f := filepath.Join(t.TempDir(), "gw.yaml")
	doc := "listen: " + freePort(t) + "\nadmin: {listen: " + freePort(t) + ", httpListen: " + freePort(t) + "}\n" +
		"backends: [{id: b1, addr: '127.0.0.1:9'}]\ndial: {sourceAddrs: [127.0.0.1, 192.0.2.1]}\n"
	if err := os.WriteFile(f, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	_, errOut, code := runBin(t, "serve", "--config", f)
	want := "dial.sourceAddrs: source address 192.0.2.1 is not usable on this host: bind: cannot assign requested address"
	if code == 0 || !strings.Contains(errOut, want) {
		t.Fatalf("serve: exit %d, stderr %q; want a failure saying %q", code, errOut, want)
	}
}
