package k8s

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8syaml "sigs.k8s.io/yaml"

	"github.com/devgate/devgate/internal/etcdserver"
	"github.com/devgate/devgate/internal/testkit"
)

// The API server check: `make k8s-validate` builds kube-apiserver at the
// version pinned in deploy/k8s/apiserver/go.mod and sets this variable to
// it. The server runs on the embedded etcd and validates every rendered
// object with server-side dry-run: the API server's own validation code
// (port-name length, sysctl names, label values, the PDB rules, enums),
// which a schema or the typed decode above does not have.
const envKubeAPIServer = "DEVGATE_KUBE_APISERVER"

const (
	apiServerReadyTimeout = 5 * time.Minute // a cold start on 2 busy cores
	apiServerStopTimeout  = 30 * time.Second

	// baseNamespace holds the base's objects, which name no namespace.
	baseNamespace = "devgate-base"
)

// podSecurityWarn makes the API server warn when a pod template would not
// pass the "restricted" Pod Security Standard (at the server's version);
// warnings are failures here. It is what catches a misspelt sysctl that is
// still a well-formed name: only the kubelet's safe sysctls pass.
var podSecurityWarn = map[string]string{"pod-security.kubernetes.io/warn": "restricted"}

// apiResources maps the kinds the manifests use (see newObject) to their
// REST collections.
var apiResources = map[string]struct{ prefix, plural string }{
	"Namespace":           {"/api/v1", "namespaces"},
	"ConfigMap":           {"/api/v1", "configmaps"},
	"Secret":              {"/api/v1", "secrets"},
	"Service":             {"/api/v1", "services"},
	"ServiceAccount":      {"/api/v1", "serviceaccounts"},
	"Deployment":          {"/apis/apps/v1", "deployments"},
	"StatefulSet":         {"/apis/apps/v1", "statefulsets"},
	"PodDisruptionBudget": {"/apis/policy/v1", "poddisruptionbudgets"},
	"NetworkPolicy":       {"/apis/networking.k8s.io/v1", "networkpolicies"},
}

// apiServer is a running kube-apiserver on loopback.
type apiServer struct {
	url, token string
	client     *http.Client
}

// startAPIServer runs bin on a fresh embedded etcd with a self-signed
// serving certificate and a static token, and waits until it is ready.
func startAPIServer(t testing.TB, bin, etcd string) *apiServer {
	t.Helper()
	dir := t.TempDir()
	serving := testkit.Issue(t, nil, "devgate k8s-validate", nil, net.IPv4(127, 0, 0, 1))
	sa := testkit.Issue(t, nil, "service accounts", nil, nil)
	token := "devgate-k8s-validate-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	files := map[string][]byte{
		"serving.crt": serving.CertPEM, "serving.key": serving.KeyPEM, "sa.crt": sa.CertPEM, "sa.key": sa.KeyPEM,
		"tokens.csv": []byte(token + ",admin,admin,system:masters\n"),
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	addr, err := etcdserver.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(addr)
	logPath := filepath.Join(dir, "kube-apiserver.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin,
		"--etcd-servers="+etcd,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", "--secure-port="+port,
		"--tls-cert-file="+filepath.Join(dir, "serving.crt"),
		"--tls-private-key-file="+filepath.Join(dir, "serving.key"),
		"--cert-dir="+dir,
		"--token-auth-file="+filepath.Join(dir, "tokens.csv"),
		"--anonymous-auth=false",
		"--authorization-mode=RBAC", // system:masters passes
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file="+filepath.Join(dir, "sa.crt"), // the public key; a PKCS#8 key file has none it reads
		"--service-account-signing-key-file="+filepath.Join(dir, "sa.key"),
		"--service-cluster-ip-range=10.96.0.0/16",
		// Validation and Pod Security only: no webhooks, quotas or
		// controllers that would need a cluster behind them.
		"--enable-admission-plugins=NamespaceLifecycle,PodSecurity",
		"--disable-admission-plugins=LimitRanger,ServiceAccount,DefaultStorageClass,PersistentVolumeClaimResize,"+
			"DefaultTolerationSeconds,MutatingAdmissionWebhook,ValidatingAdmissionWebhook,ResourceQuota,"+
			"StorageObjectInUseProtection,Priority,TaintNodesByCondition,RuntimeClass,CertificateApproval,"+
			"CertificateSigning,ClusterTrustBundleAttest,CertificateSubjectRestriction,DefaultIngressClass,"+
			"PodTopologyLabels,MutatingAdmissionPolicy,ValidatingAdmissionPolicy",
		"--endpoint-reconciler-type=none",
		"--enable-priority-and-fairness=false",
		"--profiling=false",
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start %s: %v", bin, err)
	}
	// Closed once the process is reaped: the readiness loop and the
	// cleanup may both wait for it.
	exited := make(chan struct{})
	var exitErr error
	go func() { exitErr = cmd.Wait(); logf.Close(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(apiServerStopTimeout):
			cmd.Process.Kill()
			<-exited
		}
	})
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(serving.CertPEM)
	a := &apiServer{
		url:    "https://" + net.JoinHostPort("127.0.0.1", port),
		token:  token,
		client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}},
	}
	tail := func() string {
		b, _ := os.ReadFile(logPath)
		return string(b[max(0, len(b)-4000):])
	}
	deadline := time.Now().Add(apiServerReadyTimeout)
	for {
		code, _, _, err := a.do("GET", "/readyz", nil, nil)
		if err == nil && code == http.StatusOK {
			return a
		}
		select {
		case <-exited:
			t.Fatalf("kube-apiserver exited: %v\n%s", exitErr, tail())
		case <-time.After(500 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("kube-apiserver not ready after %v (last: %d %v)\n%s", apiServerReadyTimeout, code, err, tail())
		}
	}
}

// do sends one request; it returns the status code, the API server's
// warnings and, for an error status, its message. A success's body is
// decoded into out unless out is nil.
func (a *apiServer) do(method, path string, body []byte, out any) (int, []string, string, error) {
	req, err := http.NewRequest(method, a.url+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, "", err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := a.client.Do(req)
	if err != nil {
		return 0, nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return resp.StatusCode, nil, "", err
	}
	var warnings []string
	for _, w := range resp.Header.Values("Warning") {
		// RFC 7234: 299 - "text"
		w = strings.TrimPrefix(w, "299 - ")
		if u, err := strconv.Unquote(w); err == nil {
			w = u
		}
		warnings = append(warnings, w)
	}
	if resp.StatusCode >= 300 {
		var st metav1.Status
		if json.Unmarshal(b, &st) == nil && st.Message != "" {
			return resp.StatusCode, warnings, st.Message, nil
		}
		return resp.StatusCode, warnings, strings.TrimSpace(string(b)), nil
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return resp.StatusCode, warnings, "", fmt.Errorf("%s %s: %w", method, path, err)
		}
	}
	return resp.StatusCode, warnings, "", nil
}

// ensureNamespace creates a namespace for real (dry-run needs it to
// exist), from its manifest if there is one, with podSecurityWarn added.
func (a *apiServer) ensureNamespace(name string, manifest []byte) error {
	obj := map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": name}}
	if manifest != nil {
		obj = nil
		if err := k8syaml.Unmarshal(manifest, &obj); err != nil {
			return fmt.Errorf("namespace %s: %w", name, err)
		}
	}
	md, _ := obj["metadata"].(map[string]any)
	labels, _ := md["labels"].(map[string]any)
	if labels == nil {
		labels = map[string]any{}
	}
	for k, v := range podSecurityWarn {
		labels[k] = v
	}
	md["labels"] = labels
	b, err := json.Marshal(obj)
	if err != nil {
		return err
	}
	code, warnings, msg, err := a.do("POST", "/api/v1/namespaces?fieldValidation=Strict", b, nil)
	switch {
	case err != nil:
		return fmt.Errorf("create namespace %s: %w", name, err)
	case code == http.StatusConflict: // created by an earlier render
	case code >= 300:
		return fmt.Errorf("Namespace %s: %s", name, msg)
	case len(warnings) > 0:
		return fmt.Errorf("Namespace %s: warnings: %s", name, strings.Join(warnings, "; "))
	}
	return nil
}

// dryRun creates every object with ?dryRun=All after creating their
// namespaces for real; it returns every rejection and warning.
func (a *apiServer) dryRun(objs []object) error {
	nsManifest := map[string][]byte{}
	for _, o := range objs {
		if o.kind == "Namespace" {
			nsManifest[o.name] = o.yaml
		}
	}
	var errs []error
	done := map[string]bool{}
	for _, o := range objs {
		ns := o.namespace
		if ns == "" {
			ns = baseNamespace
		}
		if o.kind == "Namespace" {
			ns = o.name
		}
		if !done[ns] {
			done[ns] = true
			if err := a.ensureNamespace(ns, nsManifest[ns]); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		if o.kind == "Namespace" {
			continue // created for real above
		}
		res, ok := apiResources[o.kind]
		if !ok {
			errs = append(errs, fmt.Errorf("%s: kind %s has no REST path; add it to apiResources", o, o.kind))
			continue
		}
		body, err := k8syaml.YAMLToJSON(o.yaml)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", o, err))
			continue
		}
		path := res.prefix + "/namespaces/" + ns + "/" + res.plural + "?dryRun=All&fieldValidation=Strict"
		code, warnings, msg, err := a.do("POST", path, body, nil)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("%s: %w", o, err))
		case code >= 300:
			errs = append(errs, fmt.Errorf("%s: rejected (%d): %s", o, code, msg))
		case len(warnings) > 0:
			errs = append(errs, fmt.Errorf("%s: warnings: %s", o, strings.Join(warnings, "; ")))
		}
	}
	return errors.Join(errs...)
}
