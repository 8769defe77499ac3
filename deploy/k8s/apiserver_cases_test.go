package k8s

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/devgate/devgate/internal/etcdserver"
)

// TestAPIServer applies every render to a real kube-apiserver with
// server-side dry-run, then mistakes that only the API server's validation
// code (or its Pod Security admission) knows, and wants each rejected with
// the server's message. Run by `make k8s-validate`.
func TestAPIServer(t *testing.T) {
	bin := os.Getenv(envKubeAPIServer)
	if bin == "" {
		t.Skipf("%s is not set: run `make k8s-validate`", envKubeAPIServer)
	}
	etcd := etcdserver.StartT(t)
	start := time.Now()
	a := startAPIServer(t, bin, etcd.Endpoint())
	var version struct{ GitVersion string }
	if _, _, _, err := a.do("GET", "/version", nil, &version); err != nil {
		t.Fatal(err)
	}
	t.Logf("kube-apiserver %s ready in %v", version.GitVersion, time.Since(start).Round(time.Millisecond))

	dirs, err := overlays(".")
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range dirs {
		t.Run("accepts/"+filepath.ToSlash(dir), func(t *testing.T) {
			objs, err := renderCached(dir)
			if err != nil {
				t.Fatal(err)
			}
			if err := a.dryRun(objs); err != nil {
				t.Fatalf("%s:\n%v", dir, err)
			}
			t.Logf("%d objects accepted", len(objs))
		})
	}
	// Dry-run stored nothing: the check cannot pass by creating objects.
	var list struct{ Items []json.RawMessage }
	code, _, msg, err := a.do("GET", "/apis/apps/v1/deployments", nil, &list)
	if err != nil || code != 200 || len(list.Items) != 0 {
		t.Fatalf("deployments after dry-run: %d %s %v, %d items; want none", code, msg, err, len(list.Items))
	}

	// The quick check's copy of the kubelet's safe sysctls (apirules_test.go)
	// must all pass Pod Security at this version.
	t.Run("accepts/safe sysctls", func(t *testing.T) {
		var sysctls []map[string]string
		for _, s := range safeSysctls {
			sysctls = append(sysctls, map[string]string{"name": s, "value": "1"})
		}
		pod := map[string]any{
			"metadata": map[string]any{"labels": map[string]string{"app": "sysctls"}},
			"spec": map[string]any{
				"securityContext": map[string]any{"runAsNonRoot": true, "seccompProfile": map[string]string{"type": "RuntimeDefault"}, "sysctls": sysctls},
				"containers": []any{map[string]any{"name": "c", "image": "example.com/c:1",
					"securityContext": map[string]any{"allowPrivilegeEscalation": false, "capabilities": map[string]any{"drop": []string{"ALL"}}}}},
			},
		}
		b, err := json.Marshal(map[string]any{"apiVersion": "apps/v1", "kind": "Deployment",
			"metadata": map[string]any{"name": "sysctls", "namespace": baseNamespace},
			"spec":     map[string]any{"selector": map[string]any{"matchLabels": map[string]string{"app": "sysctls"}}, "template": pod}})
		if err != nil {
			t.Fatal(err)
		}
		if err := a.dryRun([]object{{kind: "Deployment", namespace: baseNamespace, name: "sysctls", yaml: b}}); err != nil {
			t.Fatalf("safeSysctls holds a sysctl the API server does not admit:\n%v", err)
		}
	})

	cases := []struct {
		name, overlay, file, old, new, want string
	}{
		{"policy type misspelt", "overlays/prod", "base/networkpolicy.yaml",
			"policyTypes: [Ingress]", "policyTypes: [Ingres]",
			`spec.policyTypes[0]: Unsupported value: "Ingres"`},
		{"protocol misspelt", "overlays/prod", "base/deployment.yaml",
			"containerPort: 9000\n              protocol: TCP", "containerPort: 9000\n              protocol: TPC",
			`spec.template.spec.containers[0].ports[0].protocol: Unsupported value: "TPC"`},
		{"port name of 17 characters", "overlays/prod", "base/deployment.yaml",
			"- name: devices\n              containerPort: 9000", "- name: devices-abcdefghi\n              containerPort: 9000",
			"must be no more than 15 characters"},
		{"sysctl misspelt", "overlays/prod", "base/deployment.yaml",
			"name: net.ipv4.ip_local_port_range", "name: net.ipv4.ip_local_port_rang",
			`forbidden sysctls (net.ipv4.ip_local_port_rang)`},
		{"sysctl malformed", "overlays/prod", "base/deployment.yaml",
			"name: net.ipv4.ip_local_port_range", "name: net.ipv4,ip_local_port_range",
			`spec.template.spec.securityContext.sysctls[0].name: Invalid value: "net.ipv4,ip_local_port_range"`},
		{"label value with a space", "overlays/prod", "base/deployment.yaml",
			"  labels:\n    app.kubernetes.io/name: devgate\n    app.kubernetes.io/component: gateway\nspec:",
			"  labels:\n    app.kubernetes.io/name: devgate\n    app.kubernetes.io/component: gate way\nspec:",
			`metadata.labels: Invalid value: "gate way"`},
		{"PDB with minAvailable and maxUnavailable", "overlays/prod", "base/pdb.yaml",
			"  maxUnavailable: 1\n", "  maxUnavailable: 1\n  minAvailable: 2\n",
			"minAvailable and maxUnavailable cannot be both set"},
	}
	for _, tc := range cases {
		t.Run("rejects/"+tc.name, func(t *testing.T) {
			objs, err := renderEdited(t, tc.file, tc.old, tc.new, tc.overlay)
			if err != nil {
				t.Fatal(err)
			}
			err = a.dryRun(objs)
			if err == nil {
				t.Fatalf("%s passed the API server with the mistake", tc.overlay)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error does not mention %q:\n%v", tc.want, err)
			}
			t.Logf("API server: %v", err)
		})
	}
}
