package main

import (
	"bytes"
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/devgate/devgate/internal/etcdserver"
	"github.com/devgate/devgate/pkg/registry"
)

// acceptAndHangUp serves l until it is closed; done is closed then.
func acceptAndHangUp(l net.Listener) (done chan struct{}) {
	done = make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return done
}

func TestSidecarRegistersWhilePortAccepts(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) }) // first registered, so it runs last
	s := etcdserver.StartT(t)
	cli := etcdserver.ClientT(t, s)
	keys := registry.Keys{Prefix: "/sidecar-test"}
	key := keys.Backend("netty-1")

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := acceptAndHangUp(l)
	sc := &sidecar{
		cli: cli, keys: keys, id: "netty-1",
		value:     registry.BackendValue{Addr: "10.1.2.3:9000", Weight: 50, Meta: map[string]string{"rack": "r1"}},
		opts:      registry.RegisterOptions{TTL: 2 * time.Second, Logger: zaptest.NewLogger(t)},
		checkAddr: l.Addr().String(), interval: 100 * time.Millisecond, timeout: 100 * time.Millisecond, failures: 2,
		log: zaptest.NewLogger(t),
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- sc.run(ctx) }()

	present := func() bool {
		gctx, gcancel := context.WithTimeout(context.Background(), time.Second)
		defer gcancel()
		resp, err := cli.Get(gctx, key)
		return err == nil && len(resp.Kvs) == 1 && resp.Kvs[0].Lease != 0
	}
	wait := func(what string, want bool, within time.Duration) {
		t.Helper()
		start := time.Now()
		for present() != want {
			if time.Since(start) > within {
				t.Fatalf("%s: not within %s", what, within)
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Logf("%s after %s", what, time.Since(start).Round(time.Millisecond))
	}

	wait("registered while the port accepts", true, 3*time.Second)
	l.Close()
	<-served
	wait("deregistered after 2 failed probes", false, 3*time.Second)

	l, err = net.Listen("tcp", sc.checkAddr)
	if err != nil {
		t.Fatal(err)
	}
	served = acceptAndHangUp(l)
	defer func() { l.Close(); <-served }()
	wait("registered again", true, 3*time.Second)

	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("run did not return 5s after cancel")
	}
	if present() {
		t.Fatal("key still there after the sidecar stopped")
	}
}

func TestRegisterFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--addr", "10.0.0.1:9000"},                                   // no id
		{"--id", "a", "--addr", "10.0.0.1"},                           // no port
		{"--id", "a/b", "--addr", "10.0.0.1:9000"},                    // bad id
		{"--id", "a", "--addr", "10.0.0.1:9000", "--weight", "20000"}, // weight
		{"--id", "a", "--addr", "10.0.0.1:9000", "--meta", "novalue"},
		{"--id", "a", "--addr", "10.0.0.1:9000", "--check-failures", "0"},
		{"--id", "a", "--addr", "10.0.0.1:9000", "extra"},
	} {
		var out, errw bytes.Buffer
		if code := runMain(context.Background(), append([]string{"register"}, args...), &out, &errw); code == 0 {
			t.Errorf("%s: exit 0", strings.Join(args, " "))
		}
	}
	m := metaFlag{}
	for _, s := range []string{"rack=r1", "a=b=c", "empty="} {
		if err := m.Set(s); err != nil {
			t.Fatal(err)
		}
	}
	if got := m.String(); got != "a=b=c,empty=,rack=r1" {
		t.Fatalf("meta %q", got)
	}
}
