package main

import (
	"bufio"
	"context"
	"encoding/json"

	"io"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"google.golang.org/protobuf/encoding/protojson"

	adminv1 "github.com/devgate/devgate/api/devgate/admin/v1"
	"github.com/devgate/devgate/internal/etcdserver"
	"github.com/devgate/devgate/pkg/demo"
	"github.com/devgate/devgate/pkg/registry"
)

// TestFindKickAcrossReplicas: through the real binary, `ctl find`, `ctl
// conns` and `ctl kick` sent to replica gw-a act on a device held by
// replica gw-b (two `devgate serve` processes, one real etcd); a read-only
// token cannot kick; gw-b writes the kick's access-log line.
func TestFindKickAcrossReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs two replicas")
	}
	bin := devgateBin(t)
	etcd := etcdserver.StartT(t)
	cli := etcdserver.ClientT(t, etcd)
	bl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	backend := &demo.Backend{ID: "demo-1"}
	served := make(chan struct{})
	go func() { defer close(served); backend.Serve(bl) }()
	t.Cleanup(func() { backend.Close(); <-served })
	reg, err := registry.RegisterBackend(t.Context(), cli, registry.Keys{Prefix: "/conns-test", Cluster: "c"}, "demo-1",
		registry.BackendValue{Addr: bl.Addr().String()}, registry.RegisterOptions{Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })

	dir := t.TempDir()
	const adminTok, readTok = "admin-token-0123456789abcdef", "read-token-0123456789abcdef"
	tokens := "  tokens:\n    - {file: " + writeFile(t, dir, "token-admin", adminTok) + ", role: admin}\n" +
		"    - {file: " + writeFile(t, dir, "token-read", readTok) + ", role: read}\n"
	admins, listens, procs := map[string]string{}, map[string]string{}, map[string]*child{}
	for _, id := range []string{"gw-a", "gw-b"} {
		admins[id], listens[id] = freeAddrOn(t, "127.0.0.1"), freeAddrOn(t, "127.0.0.1")
		cfg := strings.Replace(serveConfig(etcd.Endpoint(), "/conns-test", id, admins[id], freeAddrOn(t, "127.0.0.1"), tokens),
			"listen: 127.0.0.1:0", "listen: "+listens[id], 1) + "  access: all\n"
		procs[id] = startChild(t, bin, "serve", "--config", writeFile(t, dir, id+".yaml", cfg), "--grace", "1s")
	}
	api := adminConn(t, admins["gw-a"], readTok)
	until(t, 60*time.Second, "both replicas registered, routing on the backend", func() bool {
		c, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		r, err := api.ListGateways(c, &adminv1.ListGatewaysRequest{})
		if err != nil || len(r.GetGateways()) < 2 {
			return false
		}
		for _, g := range r.GetGateways() {
			if g.GetRingSize() != 1 {
				return false
			}
		}
		return true
	})

	conn, b, err := deviceLogin(listens["gw-b"], "dev-held")
	if err != nil || b != "demo-1" {
		t.Fatalf("login through gw-b: backend %q, %v", b, err)
	}
	defer conn.Close()
	ctl := func(tok string, args ...string) (string, int) {
		return runCtlBin(t, bin, append([]string{"--addr", admins["gw-a"], "--token", tok, "--timeout", "20s"}, args...)...)
	}

	out, code := ctl(readTok, "--json", "find", "dev-held")
	var found adminv1.FindDeviceResponse
	if code != 0 || protojson.Unmarshal([]byte(out), &found) != nil {
		t.Fatalf("ctl find --json: exit %d\n%s", code, out)
	}
	if cs := found.GetConnections(); len(cs) != 1 || cs[0].GetGateway() != "gw-b" || cs[0].GetBackend() != "demo-1" ||
		cs[0].GetClientAddr() != conn.LocalAddr().String() || cs[0].GetTries() != 1 {
		t.Fatalf("ctl find: %v, want the one connection on gw-b to demo-1 from %s", cs, conn.LocalAddr())
	}
	if out, code = ctl(readTok, "find", "dev-held"); code != 0 || !strings.Contains(out, "gw-b") || !strings.Contains(out, "demo-1") {
		t.Fatalf("ctl find: exit %d\n%s", code, out)
	}
	if out, code = ctl(readTok, "conns", "--gateway", "gw-b", "--backend", "demo-1"); code != 0 || !strings.Contains(out, "dev-held") {
		t.Fatalf("ctl conns --gateway gw-b: exit %d\n%s", code, out)
	}
	if out, code = ctl(readTok, "conns", "--gateway", "gw-a"); code != 0 || strings.Contains(out, "dev-held") {
		t.Fatalf("ctl conns --gateway gw-a lists gw-b's device: exit %d\n%s", code, out)
	}

	if out, code = ctl(readTok, "kick", "dev-held"); code == 0 || !strings.Contains(out, "permission denied") {
		t.Fatalf("ctl kick with a read-only token: exit %d, want permission denied\n%s", code, out)
	}
	if out, code = ctl(readTok, "find", "dev-held"); code != 0 {
		t.Fatalf("after a refused kick the device is gone: exit %d\n%s", code, out)
	}

	out, code = ctl(adminTok, "kick", "dev-held", "--reason", "test kick")
	if code != 0 || !strings.Contains(out, "kicked 1 connection of dev-held") || !strings.Contains(out, "gw-b") {
		t.Fatalf("ctl kick: exit %d\n%s", code, out)
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, conn); err != nil {
		t.Fatalf("the kicked device's connection did not end: %v", err)
	}
	if out, code = ctl(readTok, "find", "dev-held"); code != 1 {
		t.Fatalf("ctl find after the kick: exit %d, want 1 (none)\n%s", code, out)
	}
	until(t, 10*time.Second, "gw-b's access line of the kick", func() bool {
		line := accessLine(procs["gw-b"].log.String(), "dev-held")
		return line["reason"] == "kicked" && line["gateway"] == "gw-b" && line["backend"] == "demo-1" &&
			line["client"] == conn.LocalAddr().String()
	})
}

// accessLine is the last access-log line of devid in a process's output.
func accessLine(log, devid string) map[string]any {
	var last map[string]any
	sc := bufio.NewScanner(strings.NewReader(log))
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil && m["logger"] == "access" && m["devid"] == devid {
			last = m
		}
	}
	return last
}

// `devgate config check` validates log.access, log.accessSample and
// log.accessErrorsPerSecond.
func TestConfigCheckAccessLog(t *testing.T) {
	bin := devgateBin(t)
	dir := t.TempDir()
	const static = "listen: 127.0.0.1:0\nbackends: [{id: a, addr: '127.0.0.1:1'}]\n"
	good := writeFile(t, dir, "good.yaml", static+"log: {access: all, accessSample: 10, accessErrorsPerSecond: 20}\n")
	perSec := writeFile(t, dir, "persec.yaml", static+"log: {accessErrorsPerSecond: -2}\n")
	bad := writeFile(t, dir, "bad.yaml", static+"log: {access: sometimes}\n")
	sample := writeFile(t, dir, "sample.yaml", static+"log: {accessSample: -3}\n")
	for _, tc := range []struct {
		file, want string
		code       int
	}{{good, "OK", 0}, {bad, `log.access "sometimes"`, 1}, {sample, "log.accessSample -3", 1},
		{perSec, "log.accessErrorsPerSecond -2", 1}} {
		out, err := exec.Command(bin, "config", "check", tc.file).CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		if code != tc.code || !strings.Contains(string(out), tc.want) {
			t.Errorf("config check %s: exit %d, want %d and %q:\n%s", tc.file, code, tc.code, tc.want, out)
		}
	}
}
