package registry

import (
	"fmt"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/devgate/devgate/pkg/ring"
)

// State of a backend in a snapshot.
type State string

const (
	StateActive   State = "active"   // in the ring
	StateDraining State = "draining" // registered, out of the ring for new connections
	StateHeld     State = "held"     // gone from etcd, kept in the ring by the panic threshold
)

// Member is one backend as a snapshot sees it.
type Member struct {
	ring.Backend
	State State
	Drain *DrainValue // set when a drain is stored for it
}

// Gateway is one replica registered under gateways/.
type Gateway struct {
	ID string
	GatewayValue
}

// Snapshot is an immutable view of the cluster at one etcd revision.
type Snapshot struct {
	Revision  int64    // etcd revision the view is built from
	ClusterID uint64   // etcd cluster the view came from
	Members   []Member // registered and held backends, sorted by ID
	Drains    map[string]DrainValue
	Gateways  []Gateway // sorted by ID
	Ring      ring.Ring // active and held members; never nil
	Built     time.Time
}

// Member returns the member with id, if any.
func (s *Snapshot) Member(id string) (Member, bool) {
	i := sort.Search(len(s.Members), func(i int) bool { return s.Members[i].ID >= id })
	if i < len(s.Members) && s.Members[i].ID == id {
		return s.Members[i], true
	}
	return Member{}, false
}

// view is the mutable mirror of the cluster's keys that events update.
type view struct {
	backends map[string]ring.Backend
	drains   map[string]DrainValue
	gateways map[string]GatewayValue
}

func newView() *view {
	return &view{
		backends: make(map[string]ring.Backend),
		drains:   make(map[string]DrainValue),
		gateways: make(map[string]GatewayValue),
	}
}

// apply records one key's value (nil for a delete). It returns an error for
// a value it rejected; the key then counts as absent.
func (v *view) apply(k Keys, key string, val []byte) error {
	kind, id, ok := splitKey(k, key)
	if !ok {
		return nil
	}
	var err error
	switch kind {
	case "backends":
		delete(v.backends, id)
		if val != nil {
			var b ring.Backend
			if b, err = ParseBackend(id, val); err == nil {
				if len(v.backends) >= MaxMembers {
					return fmt.Errorf("%w: more than %d backends", ErrBadValue, MaxMembers)
				}
				v.backends[id] = b
			}
		}
	case "drains":
		delete(v.drains, id)
		if val != nil {
			var d DrainValue
			if d, err = ParseDrain(id, val); err == nil {
				v.drains[id] = d
			}
		}
	case "gateways":
		delete(v.gateways, id)
		if val != nil {
			var g GatewayValue
			if g, err = ParseGateway(id, val); err == nil {
				v.gateways[id] = g
			}
		}
	}
	return err
}

// splitKey turns <root>backends/<id> into ("backends", id).
func splitKey(k Keys, key string) (kind, id string, ok bool) {
	rest, found := strings.CutPrefix(key, k.Root())
	if !found {
		return "", "", false
	}
	kind, id, found = strings.Cut(rest, "/")
	if !found || id == "" {
		return "", "", false
	}
	switch kind {
	case "backends", "drains", "gateways":
		return kind, id, true
	}
	return "", "", false
}

// build makes the snapshot of v at rev; prev's ring, if any, is reused so a
// change of a few backends costs a fraction of a full build.
func build(prev ring.Ring, v *view, held map[string]ring.Backend, mode ring.Mode, rev int64, cluster uint64, now time.Time) (*Snapshot, error) {
	s := &Snapshot{Revision: rev, ClusterID: cluster, Built: now, Drains: make(map[string]DrainValue, len(v.drains))}
	var inRing []ring.Backend
	add := func(b ring.Backend, st State) {
		m := Member{Backend: b, State: st}
		if d, ok := v.drains[b.ID]; ok {
			d := d
			m.Drain = &d
			m.State = StateDraining
		}
		if m.State != StateDraining {
			inRing = append(inRing, b)
		}
		s.Members = append(s.Members, m)
	}
	for _, b := range v.backends {
		add(b, StateActive)
	}
	for id, b := range held {
		if _, live := v.backends[id]; !live {
			add(b, StateHeld)
		}
	}
	for id, d := range v.drains {
		s.Drains[id] = d
	}
	for id, g := range v.gateways {
		s.Gateways = append(s.Gateways, Gateway{ID: id, GatewayValue: g})
	}
	sort.Slice(s.Members, func(i, j int) bool { return s.Members[i].ID < s.Members[j].ID })
	sort.Slice(s.Gateways, func(i, j int) bool { return s.Gateways[i].ID < s.Gateways[j].ID })
	if mode == ring.ModeCRC32Mod { // its order is the configured one; here: by id
		sort.Slice(inRing, func(i, j int) bool { return inRing[i].ID < inRing[j].ID })
	}
	r, err := ring.NewFrom(prev, mode, inRing)
	if err != nil {
		return nil, err
	}
	s.Ring = r
	return s, nil
}

// diffViews counts the keys whose value differs between a and b.
func diffViews(a, b *view) int {
	return diffMaps(a.backends, b.backends) + diffMaps(a.drains, b.drains) + diffMaps(a.gateways, b.gateways)
}

func diffMaps[V any](a, b map[string]V) int {
	n := 0
	for k, va := range a {
		if vb, ok := b[k]; !ok || !reflect.DeepEqual(va, vb) {
			n++
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			n++
		}
	}
	return n
}
