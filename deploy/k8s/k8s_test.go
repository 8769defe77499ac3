package k8s

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
)

// rendered caches renders of the unmodified manifests across tests.
var rendered sync.Map // dir -> func() ([]object, error)

func renderCached(dir string) ([]object, error) {
	f, _ := rendered.LoadOrStore(dir, sync.OnceValues(func() ([]object, error) { return render(dir) }))
	return f.(func() ([]object, error))()
}

// TestManifests renders the base and every overlay and checks them.
func TestManifests(t *testing.T) {
	dirs, err := overlays(".")
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range dirs {
		t.Run(filepath.ToSlash(dir), func(t *testing.T) {
			t.Parallel()
			objs, err := renderCached(dir)
			if err != nil {
				t.Fatal(err)
			}
			if err := validate(objs); err != nil {
				t.Fatalf("%s:\n%v", dir, err)
			}
			t.Logf("%d objects", len(objs))
		})
	}
}

// TestOverlayShapes pins what each overlay is for.
func TestOverlayShapes(t *testing.T) {
	replicas := func(t *testing.T, dir string) map[string]int32 {
		objs, err := renderCached(dir)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]int32{}
		for _, o := range objs {
			switch v := o.obj.(type) {
			case *appsv1.Deployment:
				got[o.kind+"/"+o.name] = *v.Spec.Replicas
			case *appsv1.StatefulSet:
				got[o.kind+"/"+o.name] = *v.Spec.Replicas
			}
		}
		return got
	}
	for dir, want := range map[string]map[string]int32{
		"overlays/dev":           {"Deployment/devgate": 1, "StatefulSet/etcd": 1, "Deployment/netty-example": 2},
		"overlays/prod":          {"Deployment/devgate": 3, "StatefulSet/etcd": 3},
		"overlays/external-etcd": {"Deployment/devgate": 3},
	} {
		t.Run(dir, func(t *testing.T) {
			t.Parallel()
			got := replicas(t, dir)
			if len(got) != len(want) {
				t.Errorf("workloads %v, want %v", got, want)
			}
			for k, n := range want {
				if got[k] != n {
					t.Errorf("%s: %d replicas, want %d", k, got[k], n)
				}
			}
		})
	}
}

// TestBrokenManifestsFail feeds copies of the manifests with one mistake
// each and wants the validator to name it: the check can fail.
func TestBrokenManifestsFail(t *testing.T) {
	cases := []struct {
		name, overlay, file, old, new, want string
	}{
		{"unknown field", "overlays/prod", "base/deployment.yaml",
			"readinessProbe:", "readinesProbe:", `Deployment devgate/devgate: error unmarshaling JSON: while decoding JSON: json: unknown field "readinesProbe"`},
		{"probe on a missing port", "overlays/prod", "base/deployment.yaml",
			"path: /readyz\n              port: admin-http", "path: /readyz\n              port: metrics", "readinessProbe port metrics is not a declared container port"},
		{"grace shorter than preStop + drain", "overlays/prod", "base/deployment.yaml",
			"terminationGracePeriodSeconds: 80", "terminationGracePeriodSeconds: 60", "terminationGracePeriodSeconds 1m0s < preStop 10s + --grace 1m0s"},
		{"no limits", "overlays/dev", "components/example-backend/deployment.yaml",
			"limits:\n              cpu: 100m\n              memory: 64Mi", "", "container register: resources need requests and limits"},
		{"config the loader rejects", "overlays/prod", "base/devgate.yaml",
			"maxConnections:", "maxConnection:", "does not load with pkg/config"},
		{"config port differs from the container port", "overlays/prod", "base/devgate.yaml",
			"listen: 0.0.0.0:9000", "listen: 0.0.0.0:9100", "listen (devices) port 9100 is not a declared container port"},
		{"admin on loopback", "overlays/prod", "base/devgate.yaml",
			"httpListen: 0.0.0.0:9091", "httpListen: 127.0.0.1:9091", "is loopback"},
		{"service targets a missing port", "base", "base/service.yaml",
			"targetPort: devices", "targetPort: device", "port devices targets device"},
		{"service selects nothing", "base", "base/service.yaml",
			"type: ClusterIP\n  selector:\n    app.kubernetes.io/name: devgate", "type: ClusterIP\n  selector:\n    app.kubernetes.io/name: devgates", "matches no pod template"},
		{"undeclared env reference", "overlays/prod", "base/deployment.yaml",
			"--admin-advertise=$(POD_IP)", "--admin-advertise=$(MY_POD_IP)", "refers to $(MY_POD_IP)"},
		{"writable root filesystem", "overlays/prod", "components/etcd/statefulset.yaml",
			"readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false", "container etcd: readOnlyRootFilesystem is not set"},
		{"privilege escalation", "overlays/prod", "base/deployment.yaml",
			"allowPrivilegeEscalation: false", "allowPrivilegeEscalation: true", "container devgate: allowPrivilegeEscalation is not false"},
		{"dev config names a missing etcd member", "overlays/dev", "overlays/dev/devgate.yaml",
			"endpoints: [http://etcd-0.etcd:2379]", "endpoints: [http://etcd-0.etcd:2379, http://etcd-1.etcd:2379]", "StatefulSet etcd has 1 replicas"},
		{"sidecar without the pod IP", "overlays/dev", "components/example-backend/deployment.yaml",
			"--addr=$(POD_IP):9000", "--addr=127.0.0.1:9000", "--addr must be $(POD_IP):port"},
		{"GOMEMLIMIT at 100% of the limit", "overlays/prod", "base/deployment.yaml",
			"          env:\n", "          env:\n            - name: GOMEMLIMIT\n              valueFrom:\n                resourceFieldRef:\n                  resource: limits.memory\n", "GOMEMLIMIT from limits.memory"},
		// The API server's rules, quick subset (TestAPIServer has them all).
		{"policy type misspelt", "overlays/prod", "base/networkpolicy.yaml",
			"policyTypes: [Ingress]", "policyTypes: [Ingres]", `spec.policyTypes[0]: unsupported value "Ingres"`},
		{"protocol misspelt", "overlays/prod", "base/deployment.yaml",
			"containerPort: 9000\n              protocol: TCP", "containerPort: 9000\n              protocol: TPC", `ports[0].protocol: unsupported value "TPC"`},
		{"port name of 17 characters", "overlays/prod", "base/deployment.yaml",
			"- name: devices\n              containerPort: 9000", "- name: devices-abcdefghi\n              containerPort: 9000", "must be no more than 15 characters"},
		{"sysctl misspelt", "overlays/prod", "base/deployment.yaml",
			"name: net.ipv4.ip_local_port_range", "name: net.ipv4.ip_local_port_rang", `"net.ipv4.ip_local_port_rang" is not one of the kubelet's safe sysctls`},
		{"sysctl malformed", "overlays/prod", "base/deployment.yaml",
			"name: net.ipv4.ip_local_port_range", "name: net.ipv4,ip_local_port_range", `invalid sysctl name "net.ipv4,ip_local_port_range"`},
		{"label value with a space", "overlays/prod", "base/deployment.yaml",
			"    app.kubernetes.io/component: gateway\nspec:", "    app.kubernetes.io/component: gate way\nspec:", `metadata.labels: Invalid value: "gate way"`},
		{"PDB with minAvailable and maxUnavailable", "overlays/prod", "base/pdb.yaml",
			"  maxUnavailable: 1\n", "  maxUnavailable: 1\n  minAvailable: 2\n", "minAvailable and maxUnavailable cannot be both set"},
		{"unpinned image", "overlays/dev", "components/etcd/statefulset.yaml",
			"quay.io/coreos/etcd:v3.6.16", "quay.io/coreos/etcd:latest", "is not pinned"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			objs, err := renderEdited(t, tc.file, tc.old, tc.new, tc.overlay)
			if err == nil {
				err = validate(objs)
			}
			if err == nil {
				t.Fatalf("%s passed with the mistake", tc.overlay)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error does not mention %q:\n%v", tc.want, err)
			}
		})
	}
}

// renderEdited renders overlay from a copy of the manifests in which file
// has its first old replaced by new; the test fails if file has no old (the
// case would no longer break anything).
func renderEdited(t *testing.T, file, old, new, overlay string) ([]object, error) {
	t.Helper()
	root := copyTree(t, ".")
	p := filepath.Join(root, file)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), old) {
		t.Fatalf("%s does not contain %q: the case no longer breaks anything", file, old)
	}
	if err := os.WriteFile(p, []byte(strings.Replace(string(b), old, new, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	return render(filepath.Join(root, overlay))
}

// copyTree copies the manifests (yaml files) under src into a temp dir.
func copyTree(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		if !strings.HasSuffix(path, ".yaml") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}
