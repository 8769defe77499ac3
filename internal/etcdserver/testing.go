package etcdserver

import (
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// StartT starts a member in a temporary directory for a test and stops it
// when the test ends.
func StartT(t testing.TB) *Server {
	t.Helper()
	s, err := Start(Config{Dir: t.TempDir(), Quick: true, ProgressNotifyInterval: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

// ClientT returns a client of s closed when the test ends.
func ClientT(t testing.TB, s *Server) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{s.Endpoint()},
		DialTimeout: 5 * time.Second,
		Logger:      mustLogger("error"),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
