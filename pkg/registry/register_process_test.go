package registry

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/devgate/devgate/internal/etcdserver"
)

// regHelperEnv tells the test binary, started again as a child, to act as a
// registrar: "<endpoint> <key>".
const regHelperEnv = "DEVGATE_TEST_REGISTRAR"

// TestHelperRegistrarProcess is not a test: it is the child process of
// TestRegistrarKilledKeyExpires, and returns at once without regHelperEnv.
func TestHelperRegistrarProcess(t *testing.T) {
	arg := os.Getenv(regHelperEnv)
	if arg == "" {
		return
	}
	endpoint, key, _ := strings.Cut(arg, " ")
	cli, err := ClientConfig{Endpoints: []string{endpoint}}.New(nil)
	if err != nil {
		fmt.Println("ERROR", err)
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r, err := Register(ctx, cli, key, []byte(`{"addr":"127.0.0.1:9000"}`), RegisterOptions{TTL: regTTL})
	if err != nil {
		fmt.Println("ERROR", err)
		os.Exit(1)
	}
	fmt.Printf("REGISTERED %d\n", r.Lease())
	time.Sleep(time.Minute) // until SIGKILL; bounded in case the parent died
	os.Exit(1)
}

// A registrar killed with SIGKILL cannot deregister: its key must go when
// the lease expires, not before and not much later.
func TestRegistrarKilledKeyExpires(t *testing.T) {
	t.Parallel()
	s := etcdserver.StartT(t)
	cli := etcdserver.ClientT(t, s)
	key := regKeys.Backend("killed")

	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperRegistrarProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), regHelperEnv+"="+s.Endpoint()+" "+key)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan struct{})
	t.Cleanup(func() { cmd.Process.Kill(); <-waited })
	lines := make(chan string, 1)
	go func() {
		defer close(waited)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if l := sc.Text(); strings.HasPrefix(l, "REGISTERED") || strings.HasPrefix(l, "ERROR") {
				lines <- l
			}
		}
		cmd.Wait() // after the pipe is drained, as os/exec asks
	}()
	select {
	case l := <-lines:
		if !strings.HasPrefix(l, "REGISTERED") {
			t.Fatalf("child: %s", l)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("child did not register in 20s")
	}
	if kv := regGet(t, cli, key); kv == nil || kv.Lease == 0 {
		t.Fatalf("child's key: %v", kv)
	}

	if err := syscall.Kill(cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	// The last keepalive went out at most TTL/3 (+0.5s of the client's send
	// loop) before the kill, so the lease lives at least 2/3 TTL - 0.5s more.
	minLife := regTTL*2/3 - 500*time.Millisecond
	d := regWait(t, cli, key, regTTL+2*time.Second, "key gone after SIGKILL", func(kv *mvccpb.KeyValue) bool {
		if kv != nil {
			return false
		}
		if since := time.Since(killed); since < minLife {
			t.Errorf("key gone %s after SIGKILL, before %s", since, minLife)
		}
		return true
	})
	t.Logf("key gone %s after SIGKILL (TTL %s)", d.Round(time.Millisecond), regTTL)
}
