package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/devgate/devgate/pkg/ring"
)

// Defaults of the key layout.
const (
	DefaultPrefix  = "/devgate"
	DefaultCluster = "default"
)

// Bounds on what etcd may hand us: values there are untrusted input.
const (
	MaxValueSize = 4096 // bytes of one value
	MaxMeta      = 32   // meta entries of one backend
	MaxAddrs     = 64   // addrs of one backend
	MaxMembers   = ring.MaxBackends
)

// ErrBadValue wraps every reason a key or value in etcd is rejected.
var ErrBadValue = errors.New("registry: bad value")

// Keys is the etcd key layout of one cluster (DESIGN.md, "etcd layout"):
//
//	<prefix>/<cluster>/backends/<id>   BackendValue, with a lease
//	<prefix>/<cluster>/drains/<id>     DrainValue, no lease (operator state)
//	<prefix>/<cluster>/gateways/<id>   GatewayValue, with a lease
type Keys struct {
	Prefix  string // default /devgate
	Cluster string // default "default"
}

func (k Keys) root() string {
	p, c := k.Prefix, k.Cluster
	if p == "" {
		p = DefaultPrefix
	}
	if c == "" {
		c = DefaultCluster
	}
	return strings.TrimSuffix(p, "/") + "/" + c + "/"
}

// Root is the prefix of every key of the cluster, ending in "/".
func (k Keys) Root() string { return k.root() }

// Backends is the prefix of backend keys, ending in "/".
func (k Keys) Backends() string { return k.root() + "backends/" }

// Drains is the prefix of drain keys, ending in "/".
func (k Keys) Drains() string { return k.root() + "drains/" }

// Gateways is the prefix of gateway keys, ending in "/".
func (k Keys) Gateways() string { return k.root() + "gateways/" }

// Backend is the key of backend id.
func (k Keys) Backend(id string) string { return k.Backends() + id }

// Drain is the key of backend id's drain.
func (k Keys) Drain(id string) string { return k.Drains() + id }

// Gateway is the key of gateway id.
func (k Keys) Gateway(id string) string { return k.Gateways() + id }

// BackendValue is the JSON a backend (Go or Java) writes under backends/.
type BackendValue struct {
	Addr   string            `json:"addr"`             // host:port devices are proxied to
	Addrs  []string          `json:"addrs,omitempty"`  // more ports of the backend (with addr or not): connections spread over all
	Weight uint32            `json:"weight,omitempty"` // 1..10000, default 100
	Zone   string            `json:"zone,omitempty"`
	Meta   map[string]string `json:"meta,omitempty"`
}

// DrainValue is the JSON an operator writes under drains/.
type DrainValue struct {
	Deadline       time.Time `json:"deadline"`       // existing connections stay until then
	EvictPerSecond float64   `json:"evictPerSecond"` // fleet-wide pace after the deadline
	Reason         string    `json:"reason,omitempty"`
}

// GatewayValue is the JSON a gateway replica writes under gateways/.
type GatewayValue struct {
	Admin   string    `json:"admin,omitempty"` // admin API address
	Version string    `json:"version,omitempty"`
	Started time.Time `json:"started"`
}

// ValidID reports whether id is acceptable as the last key segment.
func ValidID(id string) error {
	if id == "" || len(id) > 128 {
		return fmt.Errorf("%w: id must be 1..128 bytes", ErrBadValue)
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c <= ' ' || c > '~' || c == '/' {
			return fmt.Errorf("%w: id %q has byte %#x", ErrBadValue, id, c)
		}
	}
	return nil
}

// ParseBackend checks a backend value read from etcd.
func ParseBackend(id string, val []byte) (ring.Backend, error) {
	var v BackendValue
	if err := decode(id, val, &v); err != nil {
		return ring.Backend{}, err
	}
	if err := validAddr(v.Addr); err != nil {
		return ring.Backend{}, fmt.Errorf("%w: backend %q: %v", ErrBadValue, id, err)
	}
	if v.Weight > ring.MaxWeight {
		return ring.Backend{}, fmt.Errorf("%w: backend %q: weight %d over %d", ErrBadValue, id, v.Weight, ring.MaxWeight)
	}
	if len(v.Meta) > MaxMeta {
		return ring.Backend{}, fmt.Errorf("%w: backend %q: %d meta entries over %d", ErrBadValue, id, len(v.Meta), MaxMeta)
	}
	addrs, err := backendAddrs(v)
	if err != nil {
		return ring.Backend{}, fmt.Errorf("%w: backend %q: %v", ErrBadValue, id, err)
	}
	w := v.Weight
	if w == 0 {
		w = ring.DefaultWeight
	}
	return ring.Backend{ID: id, Addr: v.Addr, Addrs: addrs, Weight: w, Zone: v.Zone, Meta: v.Meta}, nil
}

// backendAddrs is all of v's addresses, addr first and each once: nil when
// addrs adds none (one address). Gateways before addrs read addr alone, so
// addr stays required.
func backendAddrs(v BackendValue) ([]string, error) {
	if len(v.Addrs) > MaxAddrs {
		return nil, fmt.Errorf("%d addrs over %d", len(v.Addrs), MaxAddrs)
	}
	out := []string{v.Addr}
	for i, a := range v.Addrs {
		if err := validAddr(a); err != nil {
			return nil, fmt.Errorf("addrs[%d]: %v", i, err)
		}
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	if len(out) == 1 {
		return nil, nil
	}
	return out, nil
}

// ParseDrain checks a drain value read from etcd.
func ParseDrain(id string, val []byte) (DrainValue, error) {
	var v DrainValue
	if err := decode(id, val, &v); err != nil {
		return v, err
	}
	if v.EvictPerSecond < 0 || v.EvictPerSecond > 1e6 {
		return v, fmt.Errorf("%w: drain %q: evictPerSecond %v out of 0..1e6", ErrBadValue, id, v.EvictPerSecond)
	}
	return v, nil
}

// ParseGateway checks a gateway value read from etcd.
func ParseGateway(id string, val []byte) (GatewayValue, error) {
	var v GatewayValue
	if err := decode(id, val, &v); err != nil {
		return v, err
	}
	if v.Admin != "" {
		if err := validAddr(v.Admin); err != nil {
			return v, fmt.Errorf("%w: gateway %q: %v", ErrBadValue, id, err)
		}
	}
	return v, nil
}

func decode(id string, val []byte, v any) error {
	if err := ValidID(id); err != nil {
		return err
	}
	if len(val) > MaxValueSize {
		return fmt.Errorf("%w: %q: value of %d bytes over %d", ErrBadValue, id, len(val), MaxValueSize)
	}
	if err := json.Unmarshal(val, v); err != nil {
		return fmt.Errorf("%w: %q: %v", ErrBadValue, id, err)
	}
	return nil
}

// validAddr accepts host:port with a numeric port 1..65535 and a host that
// is an IP or a DNS name; it never dials.
func validAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("port %q out of 1..65535", port)
	}
	if host == "" {
		return errors.New("empty host")
	}
	if ip := net.ParseIP(host); ip != nil {
		if ip.IsUnspecified() || ip.IsMulticast() {
			return fmt.Errorf("address %s cannot be dialled", host)
		}
		return nil
	}
	for i := 0; i < len(host); i++ {
		c := host[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return fmt.Errorf("host %q is not an IP or DNS name", host)
		}
	}
	return nil
}
