//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	adminv1 "github.com/devgate/devgate/api/devgate/admin/v1"
	"github.com/devgate/devgate/internal/testenv"
	"github.com/devgate/devgate/pkg/registry"
)

// Timings of the suite's cluster.
const (
	backendTTL     = 3 * time.Second // lease TTL of every backend registration
	prereadTimeout = 3 * time.Second // gateways' first-frame deadline
	gatewayGrace   = 6 * time.Second // devgate serve --grace
)

// cluster is everything the suite runs: 3 etcd members, 3 gateway
// replicas, HAProxy in front of them, Go and Netty backends.
type cluster struct {
	t       *testing.T // the running (sub)test: failures go there
	root    *testing.T // owns the processes: they live until the suite ends
	dir     string     // logs, configs, data
	devgate string     // binary
	etcdBin string
	jar     string // "" when Java or Netty is missing

	etcd     []*etcdMember
	gateways []*gateway
	lb       *proc
	lbAddr   string
	backends map[string]*backendProc
	cli      *clientv3.Client
	keys     registry.Keys
	rehome   bool // gateways move live devices; every backend opts in (rehome=login)
}

type etcdMember struct {
	name, client, peer, dir string
	p                       *proc
}

type gateway struct {
	id, listen, admin, http, config string
	p                               *proc
	conn                            *grpc.ClientConn
	api                             adminv1.AdminClient
}

type backendProc struct {
	id, addr, kind string // kind: go, sidecar, netty
	p, sidecar     *proc
}

func (c *cluster) endpoints() []string {
	var eps []string
	for _, m := range c.etcd {
		eps = append(eps, "http://"+m.client)
	}
	return eps
}

// newCluster builds the binaries and starts the whole cluster.
func newCluster(t *testing.T) *cluster { return newClusterWith(t, false) }

// newClusterWith is newCluster with moves of live devices on the gateways
// and opted in to by every backend (rehome).
func newClusterWith(t *testing.T, rehome bool) *cluster {
	if _, err := os.Stat("/usr/sbin/haproxy"); err != nil {
		testenv.Missing(t, "/usr/sbin/haproxy missing: apt-get install -y haproxy (see .ci/run)")
	}
	dir := t.TempDir()
	if d := os.Getenv("E2E_DIR"); d != "" { // keep logs for a post-mortem
		dir = d
		os.MkdirAll(dir, 0o755)
	}
	c := &cluster{t: t, root: t, dir: dir, backends: map[string]*backendProc{}, rehome: rehome}
	start := time.Now()
	c.devgate = filepath.Join(dir, "devgate")
	c.etcdBin = filepath.Join(dir, "etcdnode")
	for bin, pkg := range map[string]string{c.devgate: "../../cmd/devgate", c.etcdBin: "./etcdnode"} {
		out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, out)
		}
	}
	c.jar = nettyJarOrEmpty(t)
	t.Logf("built binaries in %v (netty: %v)", time.Since(start).Round(time.Millisecond), c.jar != "")

	c.startEtcd()
	var err error
	c.cli, err = clientv3.New(clientv3.Config{Endpoints: c.endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.cli.Close() })

	c.startGoBackend("go-1")
	c.startGoBackend("go-2")
	c.startSidecarBackend("go-3")
	if c.jar != "" {
		c.startNetty("netty-1")
	} else {
		c.startGoBackend("go-4") // stands in for the Netty server
	}
	for i := 1; i <= 3; i++ {
		c.gateways = append(c.gateways, c.newGateway(i))
	}
	for _, g := range c.gateways {
		c.startGateway(g)
	}
	c.startHAProxy()
	c.awaitRing(4)
	t.Logf("cluster up in %v: etcd %v, gateways %d, lb %s, backends %v", time.Since(start).Round(time.Millisecond),
		c.endpoints(), len(c.gateways), c.lbAddr, c.backendIDs())
	return c
}

// nettyJarOrEmpty builds the Java backend, or returns "" when Java or Netty
// is missing (the Netty parts then use a Go backend and say so).
func nettyJarOrEmpty(t *testing.T) string {
	if _, err := exec.LookPath("java"); err != nil {
		if testenv.Required() {
			testenv.Missing(t, "java not installed: the Netty backend is required (see .ci/run)")
		}
		t.Log("java not installed: the Netty backend is replaced by a Go one (see .ci/run)")
		return ""
	}
	if _, err := os.Stat("/usr/share/java/netty-common.jar"); err != nil {
		if testenv.Required() {
			testenv.Missing(t, "libnetty-java not installed: the Netty backend is required (see .ci/run)")
		}
		t.Log("libnetty-java not installed: the Netty backend is replaced by a Go one (see .ci/run)")
		return ""
	}
	out, err := exec.Command("make", "-s", "-C", "netty", "build").CombinedOutput()
	if err != nil {
		t.Fatalf("build the Netty backend: %v\n%s", err, out)
	}
	return "netty/build/netty-backend.jar"
}

func (c *cluster) startEtcd() {
	var initial []string
	for i := 1; i <= 3; i++ {
		m := &etcdMember{name: fmt.Sprintf("e%d", i), client: freeAddr(c.t), peer: freeAddr(c.t)}
		m.dir = filepath.Join(c.dir, m.name+".etcd")
		c.etcd = append(c.etcd, m)
		initial = append(initial, m.name+"=http://"+m.peer)
	}
	for _, m := range c.etcd {
		c.runEtcd(m, strings.Join(initial, ","), "new")
	}
	for _, m := range c.etcd {
		m.p.await(c.t, "ready", 30*time.Second)
	}
}

func (c *cluster) initialCluster() string {
	var initial []string
	for _, m := range c.etcd {
		initial = append(initial, m.name+"=http://"+m.peer)
	}
	return strings.Join(initial, ",")
}

func (c *cluster) runEtcd(m *etcdMember, initial, state string) {
	m.p = startProc(c.root, c.dir, m.name, c.etcdBin, "--name", m.name, "--data-dir", m.dir,
		"--client", m.client, "--peer", m.peer, "--initial-cluster", initial, "--initial-cluster-state", state)
}

// restartEtcd starts a stopped member again on its data.
func (c *cluster) restartEtcd(m *etcdMember) {
	c.runEtcd(m, c.initialCluster(), "existing")
}

// leader returns the index of the etcd leader.
func (c *cluster) leader() int {
	for i, m := range c.etcd {
		if !m.p.alive() {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		st, err := c.cli.Status(ctx, "http://"+m.client)
		cancel()
		if err == nil && st.Leader == st.Header.MemberId {
			return i
		}
	}
	return -1
}

func (c *cluster) startGoBackend(id string) *backendProc {
	args := []string{"backend", "--id", id, "--listen", "127.0.0.1:0",
		"--etcd", strings.Join(c.endpoints(), ","), "--ttl", backendTTL.String(), "--log-level", "warn"}
	if c.rehome {
		args = append(args, "--rehome")
	}
	p := startProc(c.root, c.dir, id, c.devgate, args...)
	line := p.await(c.t, "demo backend ", 10*time.Second)
	p.await(c.t, "registered ", 10*time.Second)
	b := &backendProc{id: id, kind: "go", p: p, addr: line[strings.LastIndex(line, " ")+1:]}
	c.backends[id] = b
	return b
}

// startSidecarBackend runs a demo backend that does not register itself and
// a `devgate register` sidecar next to it.
func (c *cluster) startSidecarBackend(id string) *backendProc {
	addr := freeAddr(c.t)
	p := startProc(c.root, c.dir, id, c.devgate, "backend", "--id", id, "--listen", addr, "--log-level", "warn")
	p.await(c.t, "demo backend ", 10*time.Second)
	args := []string{"register", "--etcd", strings.Join(c.endpoints(), ","),
		"--id", id, "--addr", addr, "--ttl", backendTTL.String(), "--check-interval", "500ms", "--log-level", "warn"}
	if c.rehome {
		args = append(args, "--meta", "rehome=login")
	}
	sc := startProc(c.root, c.dir, id+"-sidecar", c.devgate, args...)
	b := &backendProc{id: id, kind: "sidecar", p: p, sidecar: sc, addr: addr}
	c.backends[id] = b
	c.awaitKey(id, true)
	return b
}

func (c *cluster) startNetty(id string) *backendProc {
	p := startProc(c.root, c.dir, id, "java", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xmx256m", "-jar", c.jar,
		"--id", id, "--listen", "127.0.0.1:0", "--etcd", strings.Join(c.endpoints(), ","),
		"--ttl", fmt.Sprint(int(backendTTL.Seconds())))
	line := p.await(c.t, "listening ", 30*time.Second)
	p.await(c.t, "registered ", 30*time.Second)
	f := strings.Fields(line)
	b := &backendProc{id: id, kind: "netty", p: p, addr: f[1]}
	c.backends[id] = b
	return b
}

// nettyID is the id of the Netty backend (or of its Go stand-in).
func (c *cluster) nettyID() string {
	if c.jar == "" {
		return "go-4"
	}
	return "netty-1"
}

// restartBackend starts a backend of the same id and kind again.
func (c *cluster) restartBackend(id string) {
	b := c.backends[id]
	switch b.kind {
	case "netty":
		c.startNetty(id)
	case "sidecar":
		c.startSidecarBackend(id)
	default:
		c.startGoBackend(id)
	}
}

func (c *cluster) backendIDs() []string {
	var ids []string
	for id, b := range c.backends {
		if b.p.alive() {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids
}

// awaitKey waits until backends/<id> is present (or absent) in etcd.
func (c *cluster) awaitKey(id string, present bool) {
	eventually(c.t, 15*time.Second, "etcd key of "+id, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		r, err := c.cli.Get(ctx, c.keys.Backend(id))
		return err == nil && (len(r.Kvs) > 0) == present
	})
}

func (c *cluster) newGateway(i int) *gateway {
	g := &gateway{id: fmt.Sprintf("gw-%d", i), listen: freeAddr(c.t), admin: freeAddr(c.t), http: freeAddr(c.t)}
	g.config = filepath.Join(c.dir, g.id+".yaml")
	var eps []string
	for _, e := range c.endpoints() {
		eps = append(eps, fmt.Sprintf("%q", e))
	}
	yaml := fmt.Sprintf(`listen: %s
etcd:
  endpoints: [%s]
  leaseTTL: 5s
gateway:
  id: %s
admin:
  listen: %s
  httpListen: %s
limits:
  prereadTimeout: %s
  # HAProxy hides device addresses: every device is 127.0.0.1 here.
  maxConnectionsPerIP: -1
  acceptRatePerIP: -1
log:
  level: warn
`, g.listen, strings.Join(eps, ", "), g.id, g.admin, g.http, prereadTimeout)
	if c.rehome { // rebalances are the test's to start
		yaml += "rehome:\n  enabled: true\nrebalance:\n  auto: false\n"
	}
	if err := os.WriteFile(g.config, []byte(yaml), 0o644); err != nil {
		c.t.Fatal(err)
	}
	conn, err := grpc.NewClient(g.admin, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { conn.Close() })
	g.conn, g.api = conn, adminv1.NewAdminClient(conn)
	return g
}

// startGateway runs the replica and waits until /readyz answers 200.
func (c *cluster) startGateway(g *gateway) {
	g.p = startProc(c.root, c.dir, g.id, c.devgate, "serve", "--config", g.config, "--grace", gatewayGrace.String())
	eventually(c.t, 20*time.Second, g.id+" ready", func() bool {
		if !g.p.alive() {
			c.t.Fatalf("%s exited\n%s", g.id, g.p.tail(20))
		}
		resp, err := http.Get("http://" + g.http + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

func (c *cluster) startHAProxy() {
	c.lbAddr = freeAddr(c.t)
	cfg := fmt.Sprintf(`global
  maxconn 8000
defaults
  mode tcp
  timeout connect 2s
  timeout client 10m
  timeout server 10m
  retries 3
  option redispatch
frontend devices
  bind %s
  default_backend gateways
backend gateways
  balance roundrobin
`, c.lbAddr)
	for _, g := range c.gateways {
		cfg += fmt.Sprintf("  server %s %s check inter 500ms fall 2 rise 2\n", g.id, g.listen)
	}
	path := filepath.Join(c.dir, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		c.t.Fatal(err)
	}
	if out, err := exec.Command("/usr/sbin/haproxy", "-c", "-f", path).CombinedOutput(); err != nil {
		c.t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
	c.lb = startProc(c.root, c.dir, "haproxy", "/usr/sbin/haproxy", "-db", "-f", path)
	eventually(c.t, 10*time.Second, "haproxy listening", func() bool {
		conn, err := net.DialTimeout("tcp", c.lbAddr, time.Second)
		if err == nil {
			conn.Close()
		}
		return err == nil
	})
}

// awaitRing waits until every running gateway routes on n active backends,
// all on the same ring revision.
func (c *cluster) awaitRing(n int) time.Duration {
	return eventually(c.t, 20*time.Second, fmt.Sprintf("every gateway with %d active backends", n), func() bool {
		revs := map[float64]bool{}
		for _, g := range c.gateways {
			if !g.p.alive() {
				continue
			}
			m, err := scrape(g.http)
			if err != nil || m[`devgate_ring_backends{state="active"}`] != float64(n) || m[`devgate_ring_backends{state="held"}`] != 0 {
				return false
			}
			revs[m["devgate_ring_revision"]] = true
		}
		return len(revs) == 1
	})
}

// metrics scrapes every running gateway.
func (c *cluster) metrics() map[string]map[string]float64 {
	out := map[string]map[string]float64{}
	for _, g := range c.gateways {
		if !g.p.alive() {
			continue
		}
		m, err := scrape(g.http)
		if err != nil {
			c.t.Fatalf("scrape %s: %v", g.id, err)
		}
		out[g.id] = m
	}
	return out
}

// sum adds metric key over the gateways.
func sum(ms map[string]map[string]float64, key string) float64 {
	s := 0.0
	for _, m := range ms {
		s += m[key]
	}
	return s
}

func (c *cluster) ctx(d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	c.t.Cleanup(cancel)
	return ctx
}
