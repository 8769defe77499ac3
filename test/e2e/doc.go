// Package e2e holds end-to-end tests: real processes (the Java Netty
// reference backend, devgate binaries) on loopback, against a real etcd.
// Tests skip, saying why, only where a required tool is absent; .ci/run
// installs them.
package e2e
