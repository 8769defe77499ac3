package k8s

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/devgate/devgate/pkg/config"
)

// The checks specific to devgate's own containers: the gateway's config
// against its pod, the register sidecar, and etcd membership.

// checkGateway loads the mounted config with pkg/config and checks it
// against the container: ports, probes, mounted files, grace.
func (c *checker) checkGateway(where string, w workload, ct *corev1.Container, termGrace, preStop time.Duration) {
	path, ok := flagValue(ct.Args, "config")
	if !ok {
		path = "devgate.yaml" // serve's default, relative to the working directory
	}
	data, err := c.mountedFile(w, ct, path)
	if err != nil {
		c.errorf("%s: --config %s: %v", where, path, err)
		return
	}
	for _, e := range ct.Env {
		// A resourceFieldRef gives 100% of the limit (or, with a divisor, a
		// number without unit that Go reads as bytes): no GC headroom.
		if e.Name == "GOMEMLIMIT" && e.ValueFrom != nil && e.ValueFrom.ResourceFieldRef != nil {
			c.errorf("%s: GOMEMLIMIT from %s: leave it unset, devgate sets 90%% of the memory limit itself", where, e.ValueFrom.ResourceFieldRef.Resource)
		}
	}
	adv, hasAdv := flagValue(ct.Args, "admin-advertise")
	if hasAdv && !podIPEnv(ct, adv) {
		c.errorf("%s: --admin-advertise=%s is not the pod IP from the downward API", where, adv)
	}
	// Loaded the way serve loads it, the flag applied before validation.
	cfg, err := config.ParseWith(data, func(cf *config.Config) error {
		if !hasAdv {
			return nil
		}
		return cf.Admin.SetAdvertise(expand(ct, adv))
	})
	if err != nil {
		c.errorf("%s: %s does not load with pkg/config: %v", where, path, err)
		return
	}
	grace := 30 * time.Second // serve's default
	if g, ok := flagValue(ct.Args, "grace"); ok {
		if grace, err = time.ParseDuration(g); err != nil {
			c.errorf("%s: --grace %q: %v", where, g, err)
		}
	}
	if need := preStop + grace + shutdownSlack; termGrace < need {
		c.errorf("%s: terminationGracePeriodSeconds %v < preStop %v + --grace %v + %v", where, termGrace, preStop, grace, shutdownSlack)
	}
	want := map[string]string{"listen (devices)": cfg.ListenAddr(), "admin.httpListen": cfg.Admin.HTTPAddr()}
	if cfg.Admin.GRPCAddr() != "off" {
		want["admin.listen"] = cfg.Admin.GRPCAddr()
	}
	ports := map[string]int32{}
	for key, addr := range want {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			c.errorf("%s: %s %q: %v", where, key, addr, err)
			continue
		}
		if ip := net.ParseIP(host); host == "localhost" || ip != nil && ip.IsLoopback() {
			c.errorf("%s: %s %s is loopback: unreachable from outside the pod", where, key, addr)
		}
		n, _ := strconv.Atoi(port)
		if containerPort(ct, intstr.FromInt32(int32(n))) == 0 {
			c.errorf("%s: %s port %d is not a declared container port", where, key, n)
		}
		ports[key] = int32(n)
	}
	for name, p := range map[string]*corev1.Probe{"livenessProbe": ct.LivenessProbe, "readinessProbe": ct.ReadinessProbe} {
		wantPath := map[string]string{"livenessProbe": "/healthz", "readinessProbe": "/readyz"}[name]
		switch {
		case p == nil || p.HTTPGet == nil:
			c.errorf("%s: %s must be an httpGet on %s", where, name, wantPath)
		case containerPort(ct, p.HTTPGet.Port) != ports["admin.httpListen"]:
			c.errorf("%s: %s port %s is not admin.httpListen (%d)", where, name, p.HTTPGet.Port.String(), ports["admin.httpListen"])
		case p.HTTPGet.Path != wantPath:
			c.errorf("%s: %s path %s, want %s", where, name, p.HTTPGet.Path, wantPath)
		}
	}
	var files []string
	for _, t := range cfg.Admin.Tokens {
		files = append(files, t.File)
	}
	files = append(files, cfg.Admin.CertFile, cfg.Admin.KeyFile, cfg.Admin.ClientCAFile)
	if cfg.Etcd != nil {
		files = append(files, cfg.Etcd.CAFile, cfg.Etcd.CertFile, cfg.Etcd.KeyFile, cfg.Etcd.PasswordFile)
		c.checkEtcdEndpoints(where, w.namespace, cfg.Etcd.Endpoints)
	}
	for _, f := range files {
		if f != "" && mountFor(ct, f) == nil {
			c.errorf("%s: config names %s, which no volume mount provides", where, f)
		}
	}
}

// mountFor is the volume mount that provides path, if any.
func mountFor(ct *corev1.Container, path string) *corev1.VolumeMount {
	var best *corev1.VolumeMount
	for i := range ct.VolumeMounts {
		vm := &ct.VolumeMounts[i]
		if path == vm.MountPath || vm.SubPath == "" && strings.HasPrefix(path, strings.TrimSuffix(vm.MountPath, "/")+"/") {
			if best == nil || len(vm.MountPath) > len(best.MountPath) {
				best = vm
			}
		}
	}
	return best
}

// mountedFile returns the content a ConfigMap volume puts at path.
func (c *checker) mountedFile(w workload, ct *corev1.Container, path string) ([]byte, error) {
	if !filepath.IsAbs(path) {
		return nil, errors.New("not an absolute path")
	}
	vm := mountFor(ct, path)
	if vm == nil {
		return nil, errors.New("no volume mount provides it")
	}
	var vol *corev1.Volume
	for i := range w.pod.Spec.Volumes {
		if w.pod.Spec.Volumes[i].Name == vm.Name {
			vol = &w.pod.Spec.Volumes[i]
		}
	}
	if vol == nil || vol.ConfigMap == nil {
		return nil, fmt.Errorf("mount %s is not a ConfigMap volume", vm.MountPath)
	}
	key := vm.SubPath
	if key == "" {
		key = strings.TrimPrefix(path, strings.TrimSuffix(vm.MountPath, "/")+"/")
	}
	for _, it := range vol.ConfigMap.Items {
		if it.Path == key {
			key = it.Key
		}
	}
	o := c.find("ConfigMap", w.namespace, vol.ConfigMap.Name)
	if o == nil {
		return nil, fmt.Errorf("ConfigMap %s is not in the render", vol.ConfigMap.Name)
	}
	s, ok := o.obj.(*corev1.ConfigMap).Data[key]
	if !ok {
		return nil, fmt.Errorf("ConfigMap %s has no key %s", vol.ConfigMap.Name, key)
	}
	return []byte(s), nil
}

// checkRegister checks a `devgate register` sidecar: it advertises the pod
// IP and probes a port of its pod.
func (c *checker) checkRegister(where string, w workload, ct *corev1.Container) {
	addr, ok := flagValue(ct.Args, "addr")
	if !ok || !podIPEnv(ct, addr) {
		c.errorf("%s: --addr must be $(POD_IP):port from the downward API (got %q)", where, addr)
		return
	}
	if _, ok := flagValue(ct.Args, "id"); !ok {
		c.errorf("%s: --id is required", where)
	}
	check, ok := flagValue(ct.Args, "check-addr")
	if !ok {
		check = addr
	}
	for _, a := range []string{addr, check} {
		_, port, err := net.SplitHostPort(expand(ct, a))
		n, _ := strconv.Atoi(port)
		if err != nil || podPort(&w.pod.Spec, intstr.FromInt32(int32(n))) == 0 {
			c.errorf("%s: %s is not a port declared by a container of the pod", where, a)
		}
	}
	if eps, ok := flagValue(ct.Args, "etcd"); ok {
		c.checkEtcdEndpoints(where, w.namespace, strings.Split(expand(ct, eps), ","))
	}
}

// memberHost is a StatefulSet pod's name under its headless Service:
// <set>-<ordinal>.<service>.
var memberHost = regexp.MustCompile(`^([a-z0-9-]+)-([0-9]+)\.([a-z0-9-]+)$`)

// checkEtcdEndpoints checks endpoints that name a member of a rendered
// StatefulSet: the member must exist (ordinal < replicas).
func (c *checker) checkEtcdEndpoints(where, ns string, endpoints []string) {
	for _, ep := range endpoints {
		host := ep
		if i := strings.Index(host, "://"); i >= 0 {
			host = host[i+3:]
		}
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		m := memberHost.FindStringSubmatch(host)
		if m == nil {
			continue
		}
		for _, w := range c.workloads {
			if w.kind != "StatefulSet" || w.name != m[1] || w.namespace != ns {
				continue
			}
			if svc := w.obj.(*appsv1.StatefulSet).Spec.ServiceName; svc != m[3] {
				c.errorf("%s: endpoint %s: StatefulSet %s is governed by Service %q", where, ep, w.name, svc)
			}
			if n, _ := strconv.Atoi(m[2]); int32(n) >= w.replicas {
				c.errorf("%s: endpoint %s: StatefulSet %s has %d replicas", where, ep, w.name, w.replicas)
			}
		}
	}
}

// checkEtcdMember checks that the initial cluster names exactly the
// StatefulSet's members.
func (c *checker) checkEtcdMember(where string, w workload, ct *corev1.Container) {
	initial := ""
	for _, e := range ct.Env {
		if e.Name == "ETCD_INITIAL_CLUSTER" {
			initial = e.Value
		}
	}
	if v, ok := flagValue(ct.Args, "initial-cluster"); ok {
		initial = v
	}
	if w.kind != "StatefulSet" || initial == "" {
		c.errorf("%s: etcd must run as a StatefulSet with an initial cluster", where)
		return
	}
	members := strings.Split(initial, ",")
	if int32(len(members)) != w.replicas {
		c.errorf("%s: initial cluster has %d members, StatefulSet %d replicas", where, len(members), w.replicas)
	}
	for i, m := range members {
		if !strings.HasPrefix(m, fmt.Sprintf("%s-%d=", w.name, i)) {
			c.errorf("%s: initial cluster member %d is %q, want %s-%d=…", where, i, m, w.name, i)
		}
	}
}
