package k8s

import (
	"regexp"
	"slices"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metavalidation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// A quick subset of the API server's validation, with the apimachinery
// helpers it uses, so that `go test ./deploy/k8s` names the common
// mistakes in seconds. `make k8s-validate` (TestAPIServer) runs the whole
// of it in a real kube-apiserver; these only have to agree with it.

// safeSysctls are the kubelet's safe sysctls at Kubernetes 1.34
// (pkg/kubelet/sysctl/safe_sysctls.go): what a pod gets without the node's
// --allowed-unsafe-sysctls, and all that Pod Security's restricted profile
// admits. A misspelt name outside them is refused when the pod starts.
var safeSysctls = []string{
	"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.tcp_syncookies",
	"net.ipv4.ping_group_range", "net.ipv4.ip_unprivileged_port_start", "net.ipv4.ip_local_reserved_ports",
	"net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
	"net.ipv4.tcp_keepalive_probes", "net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem",
}

// sysctlName is the API server's format of a sysctl name
// (pkg/apis/core/validation, SysctlContainSlashFmt).
var sysctlName = regexp.MustCompile(`^([a-z0-9]([-_a-z0-9]*[a-z0-9])?[\./])*[a-z0-9]([-_a-z0-9]*[a-z0-9])?$`)

// checkAPIRules checks one object's labels, ports, enums and sysctls.
func (c *checker) checkAPIRules(o object) {
	if m, ok := o.obj.(metav1.Object); ok {
		c.fieldErrs(o, metavalidation.ValidateLabels(m.GetLabels(), field.NewPath("metadata", "labels")))
	}
	switch v := o.obj.(type) {
	case *corev1.Service:
		for i, p := range v.Spec.Ports {
			c.protocol(o, field.NewPath("spec", "ports").Index(i), p.Protocol)
		}
	case *networkingv1.NetworkPolicy:
		for i, t := range v.Spec.PolicyTypes {
			if t != networkingv1.PolicyTypeIngress && t != networkingv1.PolicyTypeEgress {
				c.errorf("%s: spec.policyTypes[%d]: unsupported value %q: Ingress or Egress", o, i, t)
			}
		}
		for i, r := range v.Spec.Ingress {
			for j, p := range r.Ports {
				c.protocol(o, field.NewPath("spec", "ingress").Index(i).Child("ports").Index(j), ptrOr(p.Protocol, ""))
			}
		}
		for i, r := range v.Spec.Egress {
			for j, p := range r.Ports {
				c.protocol(o, field.NewPath("spec", "egress").Index(i).Child("ports").Index(j), ptrOr(p.Protocol, ""))
			}
		}
	case *policyv1.PodDisruptionBudget:
		if v.Spec.MinAvailable != nil && v.Spec.MaxUnavailable != nil {
			c.errorf("%s: spec: minAvailable and maxUnavailable cannot be both set", o)
		}
	}
}

// checkPodAPIRules checks a workload's pod template.
func (c *checker) checkPodAPIRules(w workload) {
	tmpl := field.NewPath("spec", "template")
	c.fieldErrs(w.object, metavalidation.ValidateLabels(w.pod.Labels, tmpl.Child("metadata", "labels")))
	spec := &w.pod.Spec
	for i, ct := range slices.Concat(spec.InitContainers, spec.Containers) {
		for j, p := range ct.Ports {
			path := tmpl.Child("spec", "containers").Index(i).Child("ports").Index(j)
			if p.Name != "" {
				for _, msg := range validation.IsValidPortName(p.Name) {
					c.errorf("%s: %s.name: invalid value %q: %s", w.object, path, p.Name, msg)
				}
			}
			c.protocol(w.object, path, p.Protocol)
		}
	}
	if spec.SecurityContext == nil {
		return
	}
	for i, s := range spec.SecurityContext.Sysctls {
		path := tmpl.Child("spec", "securityContext", "sysctls").Index(i).Child("name")
		switch {
		case len(s.Name) > 253 || !sysctlName.MatchString(s.Name):
			c.errorf("%s: %s: invalid sysctl name %q", w.object, path, s.Name)
		case !slices.Contains(safeSysctls, s.Name):
			c.errorf("%s: %s: %q is not one of the kubelet's safe sysctls: the pod would not start", w.object, path, s.Name)
		}
	}
}

func (c *checker) protocol(o object, path *field.Path, p corev1.Protocol) {
	switch p {
	case "", corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP:
	default:
		c.errorf("%s: %s.protocol: unsupported value %q: TCP, UDP or SCTP", o, path, p)
	}
}

func (c *checker) fieldErrs(o object, errs field.ErrorList) {
	for _, e := range errs {
		c.errorf("%s: %v", o, e)
	}
}
