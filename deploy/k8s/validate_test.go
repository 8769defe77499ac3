package k8s

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	k8syaml "sigs.k8s.io/yaml"
)

// shutdownSlack is what terminationGracePeriodSeconds must leave after the
// preStop sleep and `serve --grace`: deregistering from etcd, flushing logs.
const shutdownSlack = 5 * time.Second

// samplePodIP stands in for $(POD_IP) when the gateway config is loaded.
const samplePodIP = "10.0.0.1"

// prerequisiteSecrets are created by the operator (deploy/k8s/README.md),
// not by the manifests; a Secret volume may name them without a Secret in
// the render.
var prerequisiteSecrets = []string{"devgate-admin-tokens", "devgate-etcd-client"}

// newObject maps apiVersion/kind to the typed struct it decodes into. A
// kind missing here fails validation, so every object is checked strictly.
func newObject(apiVersion, kind string) any {
	switch apiVersion + "/" + kind {
	case "v1/Namespace":
		return &corev1.Namespace{}
	case "v1/ConfigMap":
		return &corev1.ConfigMap{}
	case "v1/Secret":
		return &corev1.Secret{}
	case "v1/Service":
		return &corev1.Service{}
	case "v1/ServiceAccount":
		return &corev1.ServiceAccount{}
	case "apps/v1/Deployment":
		return &appsv1.Deployment{}
	case "apps/v1/StatefulSet":
		return &appsv1.StatefulSet{}
	case "policy/v1/PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}
	case "networking.k8s.io/v1/NetworkPolicy":
		return &networkingv1.NetworkPolicy{}
	}
	return nil
}

// object is one rendered, strictly decoded object.
type object struct {
	kind, namespace, name string
	obj                   any
	yaml                  []byte // as rendered, for the API server check
}

func (o object) String() string { return o.kind + " " + o.namespace + "/" + o.name }

// render builds the kustomization in dir (on disk) and decodes every object
// into its API type; unknown or duplicate fields are errors.
func render(dir string) ([]object, error) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	var objs []object
	for _, r := range rm.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			return nil, err
		}
		o := object{kind: r.GetKind(), namespace: r.GetNamespace(), name: r.GetName(), yaml: y}
		o.obj = newObject(r.GetApiVersion(), r.GetKind())
		if o.obj == nil {
			return nil, fmt.Errorf("%s: apiVersion %s kind %s has no typed check; add it to newObject", o, r.GetApiVersion(), r.GetKind())
		}
		if err := k8syaml.UnmarshalStrict(y, o.obj); err != nil {
			return nil, fmt.Errorf("%s: %w", o, err)
		}
		objs = append(objs, o)
	}
	if len(objs) == 0 {
		return nil, fmt.Errorf("kustomize build %s: no objects", dir)
	}
	return objs, nil
}

// workload is a Deployment or StatefulSet seen through its pod template.
type workload struct {
	object
	replicas int32
	selector *metav1.LabelSelector
	pod      *corev1.PodTemplateSpec
	claims   []string // a StatefulSet's volumeClaimTemplates, mountable too
}

// checker accumulates the problems of one render.
type checker struct {
	objs      []object
	workloads []workload
	errs      []error
}

func (c *checker) errorf(format string, args ...any) {
	c.errs = append(c.errs, fmt.Errorf(format, args...))
}

// validate checks the invariants over a render; nil when all hold.
func validate(objs []object) error {
	c := &checker{objs: objs}
	for _, o := range objs {
		switch v := o.obj.(type) {
		case *appsv1.Deployment:
			c.workloads = append(c.workloads, workload{o, ptrOr(v.Spec.Replicas, 1), v.Spec.Selector, &v.Spec.Template, nil})
		case *appsv1.StatefulSet:
			var claims []string
			for _, pvc := range v.Spec.VolumeClaimTemplates {
				claims = append(claims, pvc.Name)
			}
			c.workloads = append(c.workloads, workload{o, ptrOr(v.Spec.Replicas, 1), v.Spec.Selector, &v.Spec.Template, claims})
		}
	}
	for _, w := range c.workloads {
		c.checkWorkload(w)
		c.checkPodAPIRules(w)
	}
	for _, o := range objs {
		c.checkAPIRules(o)
		switch v := o.obj.(type) {
		case *corev1.Service:
			c.checkService(o, v)
		case *policyv1.PodDisruptionBudget:
			if len(c.selected(o.namespace, v.Spec.Selector)) == 0 {
				c.errorf("%s: selector matches no pod template", o)
			}
		case *networkingv1.NetworkPolicy:
			c.checkNetworkPolicy(o, v)
		}
	}
	return errors.Join(c.errs...)
}

func ptrOr[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

func (c *checker) checkWorkload(w workload) {
	spec := &w.pod.Spec
	sel, err := metav1.LabelSelectorAsSelector(w.selector)
	if err != nil || sel.Empty() || !sel.Matches(labels.Set(w.pod.Labels)) {
		c.errorf("%s: selector does not match the pod template's labels (%v)", w, err)
	}
	podNonRoot := spec.SecurityContext != nil && ptrOr(spec.SecurityContext.RunAsNonRoot, false)
	if len(spec.InitContainers) > 0 {
		c.errorf("%s: init containers are not checked; add them to the validator", w)
	}
	var preStopMax time.Duration
	for i := range spec.Containers {
		ct := &spec.Containers[i]
		where := fmt.Sprintf("%s container %s", w, ct.Name)
		c.checkContainer(where, spec, ct, podNonRoot, w.claims)
		if ct.Lifecycle != nil && ct.Lifecycle.PreStop != nil {
			ps := ct.Lifecycle.PreStop
			switch {
			case ps.Sleep != nil:
				preStopMax = max(preStopMax, time.Duration(ps.Sleep.Seconds)*time.Second)
			default:
				c.errorf("%s: preStop must be a sleep action (the image has no shell)", where)
			}
		}
	}
	termGrace := time.Duration(ptrOr(spec.TerminationGracePeriodSeconds, 30)) * time.Second
	for i := range spec.Containers {
		ct := &spec.Containers[i]
		where := fmt.Sprintf("%s container %s", w, ct.Name)
		switch verb(ct) {
		case "serve":
			c.checkGateway(where, w, ct, termGrace, preStopMax)
		case "register":
			c.checkRegister(where, w, ct)
		}
		if ct.Name == "etcd" {
			c.checkEtcdMember(where, w, ct)
		}
	}
	if preStopMax >= termGrace {
		c.errorf("%s: terminationGracePeriodSeconds %v does not cover preStop %v", w, termGrace, preStopMax)
	}
	for _, v := range spec.Volumes {
		switch {
		case v.ConfigMap != nil:
			if c.find("ConfigMap", w.namespace, v.ConfigMap.Name) == nil && !ptrOr(v.ConfigMap.Optional, false) {
				c.errorf("%s: volume %s: ConfigMap %s is not in the render", w, v.Name, v.ConfigMap.Name)
			}
		case v.Secret != nil:
			if c.find("Secret", w.namespace, v.Secret.SecretName) == nil && !slices.Contains(prerequisiteSecrets, v.Secret.SecretName) {
				c.errorf("%s: volume %s: Secret %s is neither rendered nor a documented prerequisite", w, v.Name, v.Secret.SecretName)
			}
		}
	}
}

func (c *checker) checkContainer(where string, spec *corev1.PodSpec, ct *corev1.Container, podNonRoot bool, claims []string) {
	if !imagePinned(ct.Image) {
		c.errorf("%s: image %q is not pinned to a version tag or digest", where, ct.Image)
	}
	for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, okReq := ct.Resources.Requests[res]
		lim, okLim := ct.Resources.Limits[res]
		if !okReq || !okLim {
			c.errorf("%s: resources need requests and limits for %s", where, res)
		} else if req.Cmp(lim) > 0 {
			c.errorf("%s: %s request %s over limit %s", where, res, req.String(), lim.String())
		}
	}
	sc := ct.SecurityContext
	switch {
	case sc == nil:
		c.errorf("%s: no securityContext", where)
	default:
		if !podNonRoot && !ptrOr(sc.RunAsNonRoot, false) {
			c.errorf("%s: runAsNonRoot is not set", where)
		}
		if !ptrOr(sc.ReadOnlyRootFilesystem, false) {
			c.errorf("%s: readOnlyRootFilesystem is not set", where)
		}
		if ptrOr(sc.AllowPrivilegeEscalation, true) {
			c.errorf("%s: allowPrivilegeEscalation is not false", where)
		}
		if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
			c.errorf("%s: capabilities must drop ALL and add none", where)
		}
	}
	for name, p := range map[string]*corev1.Probe{"startupProbe": ct.StartupProbe, "livenessProbe": ct.LivenessProbe, "readinessProbe": ct.ReadinessProbe} {
		if p == nil {
			continue
		}
		var port intstr.IntOrString
		switch {
		case p.HTTPGet != nil:
			port = p.HTTPGet.Port
		case p.TCPSocket != nil:
			port = p.TCPSocket.Port
		case p.GRPC != nil:
			port = intstr.FromInt32(p.GRPC.Port)
		default:
			c.errorf("%s: %s has no httpGet, tcpSocket or grpc action", where, name)
			continue
		}
		if containerPort(ct, port) == 0 {
			c.errorf("%s: %s port %s is not a declared container port", where, name, port.String())
		}
	}
	declared := map[string]bool{}
	for _, e := range ct.Env {
		declared[e.Name] = true
	}
	for _, s := range slices.Concat(ct.Command, ct.Args) {
		for _, m := range envRef.FindAllStringSubmatch(s, -1) {
			if !declared[m[1]] {
				c.errorf("%s: %q refers to $(%s), which the container does not declare (Kubernetes would pass it literally)", where, s, m[1])
			}
		}
	}
	mountable := map[string]bool{}
	for _, name := range claims {
		mountable[name] = true
	}
	for _, v := range spec.Volumes {
		mountable[v.Name] = true
	}
	for _, vm := range ct.VolumeMounts {
		if !mountable[vm.Name] {
			c.errorf("%s: volumeMount %s names no volume", where, vm.Name)
		}
	}
}

var envRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// imagePinned wants a digest or a tag other than latest.
func imagePinned(image string) bool {
	if strings.Contains(image, "@sha256:") {
		return true
	}
	i := strings.LastIndex(image, ":")
	return i > strings.LastIndex(image, "/") && image[i+1:] != "latest"
}

// containerPort resolves a port by name or number among the container's
// declared ports; 0 when it is not declared.
func containerPort(ct *corev1.Container, p intstr.IntOrString) int32 {
	for _, cp := range ct.Ports {
		if p.Type == intstr.String && cp.Name == p.StrVal || p.Type == intstr.Int && cp.ContainerPort == p.IntVal {
			return cp.ContainerPort
		}
	}
	return 0
}

// podPort resolves a port by name or number in any container of the pod.
func podPort(spec *corev1.PodSpec, p intstr.IntOrString) int32 {
	for i := range spec.Containers {
		if n := containerPort(&spec.Containers[i], p); n != 0 {
			return n
		}
	}
	return 0
}

// verb is the devgate subcommand a container runs ("" for others).
func verb(ct *corev1.Container) string {
	if !strings.Contains(ct.Image, "/devgate") || len(ct.Args) == 0 {
		return ""
	}
	return ct.Args[0]
}

// flagValue finds --name=value or --name value in args.
func flagValue(args []string, name string) (string, bool) {
	for i, a := range args {
		a = "-" + strings.TrimLeft(a, "-")
		if v, ok := strings.CutPrefix(a, "-"+name+"="); ok {
			return v, true
		}
		if a == "-"+name && i+1 < len(args) {
			return args[i+1], true
		}
	}
	return "", false
}

// expand replaces $(VAR) by the sample values the downward API would give.
func expand(ct *corev1.Container, s string) string {
	return envRef.ReplaceAllStringFunc(s, func(ref string) string {
		name := envRef.FindStringSubmatch(ref)[1]
		for _, e := range ct.Env {
			if e.Name != name {
				continue
			}
			switch {
			case e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "status.podIP":
				return samplePodIP
			case e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name":
				return "pod-0"
			case e.ValueFrom == nil:
				return e.Value
			}
		}
		return ref
	})
}

// podIPEnv says whether s uses $(VAR) where VAR is the pod IP.
func podIPEnv(ct *corev1.Container, s string) bool {
	for _, m := range envRef.FindAllStringSubmatch(s, -1) {
		for _, e := range ct.Env {
			if e.Name == m[1] && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "status.podIP" {
				return true
			}
		}
	}
	return false
}

func (c *checker) find(kind, ns, name string) *object {
	for i := range c.objs {
		if o := &c.objs[i]; o.kind == kind && o.namespace == ns && o.name == name {
			return o
		}
	}
	return nil
}

// selected are the workloads of ns whose pod labels the selector matches.
func (c *checker) selected(ns string, ls *metav1.LabelSelector) []workload {
	sel, err := metav1.LabelSelectorAsSelector(ls)
	if err != nil || sel.Empty() {
		return nil
	}
	var out []workload
	for _, w := range c.workloads {
		if w.namespace == ns && sel.Matches(labels.Set(w.pod.Labels)) {
			out = append(out, w)
		}
	}
	return out
}

func (c *checker) checkService(o object, s *corev1.Service) {
	ws := c.selected(o.namespace, &metav1.LabelSelector{MatchLabels: s.Spec.Selector})
	if len(ws) == 0 {
		c.errorf("%s: selector %v matches no pod template", o, s.Spec.Selector)
		return
	}
	for _, p := range s.Spec.Ports {
		target := p.TargetPort
		if target.Type == intstr.Int && target.IntVal == 0 {
			target = intstr.FromInt32(p.Port)
		}
		for _, w := range ws {
			if podPort(&w.pod.Spec, target) == 0 {
				c.errorf("%s: port %s targets %s, which %s does not declare", o, p.Name, target.String(), w)
			}
		}
	}
	if s.Spec.Type == corev1.ServiceTypeLoadBalancer && s.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal {
		c.errorf("%s: a LoadBalancer for devices needs externalTrafficPolicy: Local (client addresses, one hop)", o)
	}
}

func (c *checker) checkNetworkPolicy(o object, np *networkingv1.NetworkPolicy) {
	ws := c.selected(o.namespace, &np.Spec.PodSelector)
	if len(ws) == 0 {
		c.errorf("%s: podSelector matches no pod template", o)
		return
	}
	for _, rule := range np.Spec.Ingress {
		for _, p := range rule.Ports {
			if p.Port == nil {
				continue
			}
			for _, w := range ws {
				if podPort(&w.pod.Spec, *p.Port) == 0 {
					c.errorf("%s: port %s is not declared by %s", o, p.Port.String(), w)
				}
			}
		}
	}
}

// overlays lists the kustomizations under root worth rendering: the base
// and every overlay.
func overlays(root string) ([]string, error) {
	dirs := []string{filepath.Join(root, "base")}
	more, err := filepath.Glob(filepath.Join(root, "overlays", "*", "kustomization.yaml"))
	if err != nil {
		return nil, err
	}
	for _, m := range more {
		dirs = append(dirs, filepath.Dir(m))
	}
	if len(more) == 0 {
		return nil, fmt.Errorf("%s: no overlays", root)
	}
	_, err = os.Stat(dirs[0])
	return dirs, err
}
