// Package e2e holds end-to-end tests: real processes (the Java Netty
// reference backend, devgate binaries) on loopback, against a real etcd.
// Tests skip, saying why, only where a required tool is absent; .ci/run
// installs them.
//
// Without build tags only the Netty registration test runs (part of
// `make test`). The cluster suite (issue 7) is behind the e2e tag:
//
//	go test -tags e2e -v -count=1 -timeout 15m ./test/e2e/
//
// It builds devgate and etcdnode (a one-member etcd process, in
// ./etcdnode), then starts, each as its own process and stopped by PID:
// a 3-member etcd cluster, 3 `devgate serve` replicas, HAProxy
// (/usr/sbin/haproxy, mode tcp, roundrobin) in front of them, two Go demo
// backends registering themselves, one behind the `devgate register`
// sidecar, and the Netty backend (a Go one stands in when Java or
// libnetty-java is missing). TestCluster then runs the scenarios in order
// on that cluster and logs their figures: stickiness across replicas,
// backend crash, drain, scale-out and rebalance, bad input, rolling
// restart of the gateways, etcd faults. E2E_DIR=/some/dir keeps the
// processes' logs and configs there instead of a temporary directory.
package e2e
