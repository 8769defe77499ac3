package ring

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Limits on input. They bound the table entry size (uint16) and keep
// w*L products far below 2^63 (see doc.go).
const (
	MaxBackends   = 4096
	MaxWeight     = 10000
	DefaultWeight = 100
	MaxIDLen      = 128
)

// Backend is one member. Only ID and Weight affect placement; Addr, Zone and
// Meta are carried along for the caller.
type Backend struct {
	ID     string            // unique, 1..128 bytes of printable ASCII without space (0x21-0x7e)
	Addr   string            // host:port
	Weight uint32            // 1..MaxWeight; 0 in input means DefaultWeight
	Zone   string            // informational
	Meta   map[string]string // informational
	// Addrs, when set, are all the host:ports of the backend (Addr is
	// the first): its connections spread over them. Not part of placement.
	Addrs []string
}

// Mode selects the placement rule.
type Mode string

const (
	// ModeConsistent is weighted rendezvous hashing over a bucket table (see
	// package doc). It is the default; "" means ModeConsistent.
	ModeConsistent Mode = "consistent"
	// ModeCRC32Mod is the OpenResty rule crc32(key) % N over the given order.
	// A migration aid only: it is not consistent and ignores weights.
	ModeCRC32Mod Mode = "crc32-mod"
)

// Ring is immutable and safe for concurrent use.
type Ring interface {
	// Lookup returns the index (into Backends()) of the owner of key, or -1 if
	// the ring is empty. It does not allocate.
	Lookup(key []byte) int
	// Owners appends to dst up to n distinct backend indexes in fallback
	// order, owner first, and returns the extended slice.
	Owners(key []byte, n int, dst []int) []int
	// Backends returns the members: sorted by ID in ModeConsistent, in the
	// configured order in ModeCRC32Mod. Weights are resolved (never 0).
	// The slice is shared, so the hot path can index it without copying:
	// callers must not modify it.
	Backends() []Backend
	Len() int
	Mode() Mode
	// Shares returns, per backend index, the share of the key space it
	// owns (summing to 1), for operators; not for the hot path.
	Shares() []float64
}

// Errors returned by New, wrapped with the offending backend.
var (
	ErrBadMode         = errors.New("unknown ring mode")
	ErrBadID           = errors.New("backend id must be 1-128 bytes of printable ASCII without space")
	ErrDuplicateID     = errors.New("duplicate backend id")
	ErrBadWeight       = errors.New("backend weight over MaxWeight")
	ErrTooManyBackends = errors.New("too many backends")
)

// New validates backends and builds a ring. In ModeConsistent the input order
// does not matter. The input slice is copied (Meta maps too), so the caller
// may reuse it. An empty ring is valid: Lookup returns -1.
func New(mode Mode, backends []Backend) (Ring, error) {
	return NewFrom(nil, mode, backends)
}

// NewFrom is New that reuses prev's table: a bucket whose owner is still
// present with the same weight keeps it unless an added or re-weighted
// backend beats it, because the owner is an argmax under a total order.
// A change of k backends then costs O(M*(k+1)) draws instead of O(M*N),
// which matters from a few hundred backends on (see doc.go). The result is
// identical to New(mode, backends); prev may be nil or a ring of any mode.
func NewFrom(prev Ring, mode Mode, backends []Backend) (Ring, error) {
	if mode == "" {
		mode = ModeConsistent
	}
	if mode != ModeConsistent && mode != ModeCRC32Mod {
		return nil, fmt.Errorf("ring: mode %q: %w", mode, ErrBadMode)
	}
	bs, err := validate(backends)
	if err != nil {
		return nil, err
	}
	if mode == ModeCRC32Mod {
		return &crcRing{backends: bs}, nil
	}
	slices.SortFunc(bs, func(a, b Backend) int { return strings.Compare(a.ID, b.ID) })
	p, _ := prev.(*hrwRing)
	return newHRW(bs, p), nil
}

// validate checks the input and returns a private copy with weights resolved.
func validate(in []Backend) ([]Backend, error) {
	if len(in) > MaxBackends {
		return nil, fmt.Errorf("ring: %d backends, limit %d: %w", len(in), MaxBackends, ErrTooManyBackends)
	}
	out := make([]Backend, len(in))
	seen := make(map[string]struct{}, len(in))
	for i, b := range in {
		if !validID(b.ID) {
			return nil, fmt.Errorf("ring: backend %d id %.140q: %w", i, b.ID, ErrBadID)
		}
		if _, dup := seen[b.ID]; dup {
			return nil, fmt.Errorf("ring: backend %d id %q: %w", i, b.ID, ErrDuplicateID)
		}
		seen[b.ID] = struct{}{}
		switch {
		case b.Weight == 0:
			b.Weight = DefaultWeight
		case b.Weight > MaxWeight:
			return nil, fmt.Errorf("ring: backend %q weight %d, limit %d: %w", b.ID, b.Weight, MaxWeight, ErrBadWeight)
		}
		b.Meta = maps.Clone(b.Meta)
		out[i] = b
	}
	return out, nil
}

func validID(id string) bool {
	if len(id) == 0 || len(id) > MaxIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] < 0x21 || id[i] > 0x7e {
			return false
		}
	}
	return true
}
