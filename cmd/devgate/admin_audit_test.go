package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	adminv1 "github.com/devgate/devgate/api/devgate/admin/v1"
	"github.com/devgate/devgate/internal/etcdserver"
	"github.com/devgate/devgate/pkg/registry"
)

// TestServeRefusesExposedAdmin: pprof on a non-loopback HTTP port without
// the insecure opt-in, or tokens on a non-loopback gRPC port without TLS,
// stop devgate serve at start with a message naming the setting. Nothing
// listens: the check comes before etcd (whose endpoint here is closed).
func TestServeRefusesExposedAdmin(t *testing.T) {
	bin := devgateBin(t)
	dir := t.TempDir()
	tok := writeFile(t, dir, "token-admin", "admin-token-0123456789abcdef")
	deadEtcd := "http://" + freeAddrOn(t, "127.0.0.1")
	for _, tc := range []struct{ name, admin, want string }{
		{"pprof on every interface", "  listen: 127.0.0.1:0\n  httpListen: 0.0.0.0:0\n  pprof: true\n", "admin.pprof on admin.httpListen 0.0.0.0:0, which is not loopback"},
		{"tokens in clear", "  listen: 0.0.0.0:0\n  advertise: 127.0.0.1:1\n  httpListen: 127.0.0.1:0\n  tokens: [{file: " + tok + ", role: admin}]\n",
			"admin tokens would cross the network in clear"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := writeFile(t, dir, "c.yaml", "listen: 127.0.0.1:0\netcd: {endpoints: ["+deadEtcd+"], prefix: /refuse}\nadmin:\n"+tc.admin)
			c := startChild(t, bin, "serve", "--config", cfg)
			if !c.exited(20 * time.Second) {
				t.Fatalf("serve still running 20s after start: it did not refuse\n%s", c.log.String())
			}
			if out := c.log.String(); c.err == nil || !strings.Contains(out, tc.want) {
				t.Fatalf("exit %v, output lacks %q:\n%s", c.err, tc.want, out)
			}
		})
	}
}

// auditLines returns the JSON log lines of logger "audit" with msg.
func auditLines(log, msg string) []map[string]any {
	var out []map[string]any
	for _, l := range strings.Split(log, "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["logger"] == "audit" && m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// TestAdminAuditLog: one audit line per mutation with the principal, and
// one per refused call (wrong role, no token), through ctl and serve.
func TestAdminAuditLog(t *testing.T) {
	bin := devgateBin(t)
	etcd := etcdserver.StartT(t)
	cli := etcdserver.ClientT(t, etcd)
	keys := registry.Keys{Prefix: "/audit-test", Cluster: "c"}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, keys.Backend("b1"), `{"addr":"127.0.0.1:9","weight":100}`); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	const adminTok, readTok = "admin-token-0123456789abcdef", "read-token-0123456789abcdef"
	tokens := "  tokens:\n    - {file: " + writeFile(t, dir, "ops-admin", adminTok) + ", role: admin}\n" +
		"    - {file: " + writeFile(t, dir, "viewer", readTok) + ", role: read}\n"
	addr := freeAddrOn(t, "127.0.0.1")
	cfg := writeFile(t, dir, "gw.yaml", serveConfig(etcd.Endpoint(), "/audit-test", "gw-a", addr, freeAddrOn(t, "127.0.0.1"), tokens))
	gw := startChild(t, bin, "serve", "--config", cfg, "--grace", "1s")
	api := adminConn(t, addr, readTok)
	until(t, 60*time.Second, "serve answering", func() bool {
		c, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		_, err := api.LocalStatus(c, &adminv1.LocalStatusRequest{})
		return err == nil
	})

	if _, code := runCtlBin(t, bin, "--addr", addr, "--token", adminTok, "drain", "b1", "--reason", "audit test"); code != 0 {
		t.Fatalf("drain as admin: exit %d", code)
	}
	if _, code := runCtlBin(t, bin, "--addr", addr, "--token", readTok, "undrain", "b1"); code == 0 {
		t.Fatal("undrain with a read token succeeded")
	}
	if _, code := runCtlBin(t, bin, "--addr", addr, "undrain", "b1"); code == 0 {
		t.Fatal("undrain without a token succeeded")
	}
	var done, refused []map[string]any
	until(t, 10*time.Second, "audit lines in the log", func() bool {
		done, refused = auditLines(gw.log.String(), "admin mutation"), auditLines(gw.log.String(), "admin call refused")
		return len(done) >= 1 && len(refused) >= 2
	})
	if m := done[0]; len(done) != 1 || m["method"] != "/devgate.admin.v1.Admin/DrainBackend" || m["principal"] != "token ops-admin" ||
		m["target"] != "b1" || m["code"] != "OK" {
		t.Errorf("mutation lines: %v", done)
	}
	want := []struct{ principal, reason string }{{"token viewer", "permission_denied"}, {"anonymous", "unauthenticated"}}
	for i, w := range want {
		if m := refused[i]; m["principal"] != w.principal || m["reason"] != w.reason || m["method"] != "/devgate.admin.v1.Admin/UndrainBackend" {
			t.Errorf("refused line %d: %v, want principal %q reason %q", i, m, w.principal, w.reason)
		}
	}
	if len(refused) != 2 {
		t.Errorf("refused lines: %v", refused)
	}
}
