// Package k8s holds the Kubernetes manifests for devgate (a kustomize base,
// components and overlays; see README.md) and, in its tests, their offline
// validation: every overlay is rendered with the kustomize API, every object
// is decoded strictly into the Kubernetes API types, and the invariants the
// gateway depends on are checked (probes on declared ports, the mounted
// config loads with pkg/config and agrees with the container ports, the
// termination grace covers preStop plus `serve --grace`, resources, security
// context, Service and policy selectors). `go test ./deploy/k8s` runs it.
package k8s
