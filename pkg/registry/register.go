package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"
)

// Lease TTL bounds of a Registration.
const (
	DefaultTTL = 10 * time.Second
	MinTTL     = 2 * time.Second // etcd's own floor with its default election timing
)

// Retry pacing of a registration, jittered: capped at a second so that a
// registrar whose lease lapsed during an outage has a new one within about
// a second of etcd answering, before etcd expires the old lease it restored.
const (
	backoffMin = 250 * time.Millisecond
	backoffMax = time.Second
)

// RegisterOptions tune a Registration. The zero value is usable.
type RegisterOptions struct {
	// TTL of the lease. If zero, DefaultTTL; shorter than MinTTL is raised
	// to MinTTL; rounded up to whole seconds, etcd's unit.
	TTL time.Duration
	// Logger; if nil, nothing is logged.
	Logger *zap.Logger
}

func (o RegisterOptions) ttl() int64 {
	d := o.TTL
	if d == 0 {
		d = DefaultTTL
	}
	d = max(d, MinTTL)
	return int64((d + time.Second - 1) / time.Second)
}

// Registration keeps one key in etcd under a lease until Close, the way a
// concurrency.Session keeps a lease. When the lease is lost (etcd lost it,
// keepalives failed for a TTL, someone revoked it) it registers again with a
// new lease, with backoff, for as long as it lives; a key deleted by someone
// else while the lease lives is put back.
//
// It uses the Lease API rather than concurrency.Session: one goroutine then
// selects over the keepalive responses, a watch on the key and Close, so a
// lost lease, a deleted key and shutdown are handled in one place, and Close
// deletes the key only while it is still ours, which Session cannot do.
type Registration struct {
	cli   *clientv3.Client
	key   string
	value string
	ttl   int64
	log   *zap.Logger

	lease    atomic.Int64
	ctx      context.Context // cancelled by Close: ends every etcd call of the loop
	cancel   context.CancelFunc
	loopDone chan struct{}
	done     chan struct{}
	once     sync.Once
	err      error
}

// Register puts key=value under a new lease with keepalive and keeps it there
// until Close. It returns after the first successful put; until then it
// retries transient errors with backoff, and gives up when ctx ends or etcd
// refuses for good (bad request, permission, authentication).
func Register(ctx context.Context, cli *clientv3.Client, key string, value []byte, opts RegisterOptions) (*Registration, error) {
	if cli == nil {
		return nil, errors.New("registry: nil etcd client")
	}
	if key == "" {
		return nil, fmt.Errorf("%w: empty key", ErrBadValue)
	}
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	r := &Registration{
		cli: cli, key: key, value: string(value), ttl: opts.ttl(),
		log:      log.With(zap.String("key", key)),
		loopDone: make(chan struct{}),
		done:     make(chan struct{}),
	}
	// The keepalive must outlive the caller's ctx, so the loop has its own.
	r.ctx, r.cancel = context.WithCancel(context.Background())
	h, err := r.registerRetry(ctx, true)
	if err != nil {
		r.cancel()
		return nil, err
	}
	r.log.Info("registered", zap.Int64("lease", int64(h.lease)), zap.Int64("ttl", r.ttl))
	go r.run(h)
	return r, nil
}

// RegisterBackend registers backend id under keys.Backend(id). The id and
// value must pass ParseBackend, or the error wraps ErrBadValue.
func RegisterBackend(ctx context.Context, cli *clientv3.Client, keys Keys, id string, v BackendValue, opts RegisterOptions) (*Registration, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("%w: backend %q: %v", ErrBadValue, id, err)
	}
	if _, err := ParseBackend(id, b); err != nil {
		return nil, err
	}
	return Register(ctx, cli, keys.Backend(id), b, opts)
}

// RegisterGateway registers gateway id under keys.Gateway(id); a zero
// Started is set to now. The id and value must pass ParseGateway.
func RegisterGateway(ctx context.Context, cli *clientv3.Client, keys Keys, id string, v GatewayValue, opts RegisterOptions) (*Registration, error) {
	if v.Started.IsZero() {
		v.Started = time.Now().UTC()
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("%w: gateway %q: %v", ErrBadValue, id, err)
	}
	if _, err := ParseGateway(id, b); err != nil {
		return nil, err
	}
	return Register(ctx, cli, keys.Gateway(id), b, opts)
}

// Key is the registered key.
func (r *Registration) Key() string { return r.key }

// Lease is the lease of the latest registration; it changes when the
// registration is renewed after a lost lease.
func (r *Registration) Lease() clientv3.LeaseID { return clientv3.LeaseID(r.lease.Load()) }

// Done is closed when Close has finished.
func (r *Registration) Done() <-chan struct{} { return r.done }

// Close stops the keepalive, deletes the key if it is still under our lease
// (a successor with the same id may own it by now) and revokes the lease,
// all bounded by min(TTL, 5s): after the TTL the lease is gone anyway.
// Later calls return the first call's result.
func (r *Registration) Close() error {
	r.once.Do(func() {
		defer close(r.done)
		r.cancel()
		<-r.loopDone
		ctx, cancel := context.WithTimeout(context.Background(), min(time.Duration(r.ttl)*time.Second, 5*time.Second))
		defer cancel()
		id := r.Lease()
		_, derr := r.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.LeaseValue(r.key), "=", id)).
			Then(clientv3.OpDelete(r.key)).Commit()
		_, rerr := r.cli.Revoke(ctx, id)
		if errors.Is(rerr, rpctypes.ErrLeaseNotFound) {
			rerr = nil // already expired or revoked: nothing left to do
		}
		if derr != nil {
			derr = fmt.Errorf("deregister %s: delete: %w", r.key, derr)
		}
		if rerr != nil {
			rerr = fmt.Errorf("deregister %s: revoke lease %x: %w", r.key, id, rerr)
		}
		r.err = errors.Join(derr, rerr)
		if r.err != nil {
			r.log.Warn("deregister failed; the key goes when its lease expires", zap.Error(r.err))
		} else {
			r.log.Info("deregistered", zap.Int64("lease", int64(id)))
		}
	})
	return r.err
}

// held is one lease being kept alive.
type held struct {
	lease  clientv3.LeaseID
	rev    int64 // revision of our put; the key watch starts after it
	ka     <-chan *clientv3.LeaseKeepAliveResponse
	cancel context.CancelFunc // ends the keepalive
}

func (r *Registration) opTimeout() time.Duration {
	return max(time.Duration(r.ttl)*time.Second/2, time.Second)
}

// register grants a lease, puts the key under it and starts the keepalive.
func (r *Registration) register(ctx context.Context) (*held, error) {
	cctx, cancel := context.WithTimeout(ctx, r.opTimeout())
	defer cancel()
	g, err := r.cli.Grant(cctx, r.ttl)
	if err != nil {
		return nil, fmt.Errorf("grant lease: %w", err)
	}
	// Stored before the put so that Close revokes it whatever happens next.
	r.lease.Store(int64(g.ID))
	p, err := r.cli.Put(cctx, r.key, r.value, clientv3.WithLease(g.ID))
	if err != nil {
		r.revokeQuietly(g.ID)
		return nil, fmt.Errorf("put %s: %w", r.key, err)
	}
	kctx, kcancel := context.WithCancel(r.ctx)
	ka, err := r.cli.KeepAlive(kctx, g.ID)
	if err != nil {
		kcancel()
		r.revokeQuietly(g.ID)
		return nil, fmt.Errorf("keepalive: %w", err)
	}
	return &held{lease: g.ID, rev: p.Header.Revision, ka: ka, cancel: kcancel}, nil
}

// revokeQuietly drops a lease we will not use; if etcd is unreachable the
// lease expires by itself.
func (r *Registration) revokeQuietly(id clientv3.LeaseID) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	r.cli.Revoke(ctx, id)
}

// registerRetry calls register until it succeeds or ctx ends. With
// giveUp, errors etcd will repeat forever are returned at once.
func (r *Registration) registerRetry(ctx context.Context, giveUp bool) (*held, error) {
	bo := jitterBackoff{min: backoffMin, max: backoffMax}
	for attempt := 1; ; attempt++ {
		h, err := r.register(ctx)
		if err == nil {
			return h, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("register %s: %w (last error: %v)", r.key, ctx.Err(), err)
		}
		if permanent(err) {
			if giveUp {
				return nil, fmt.Errorf("register %s: %w", r.key, err)
			}
			r.log.Error("register failed; etcd refuses, still retrying", zap.Int("attempt", attempt), zap.Error(err))
		} else {
			r.log.Warn("register failed; retrying", zap.Int("attempt", attempt), zap.Error(err))
		}
		if pause(ctx, r.cli, bo.next()) != nil {
			return nil, fmt.Errorf("register %s: %w (last error: %v)", r.key, ctx.Err(), err)
		}
	}
}

// pause waits d, or less when the client's connection becomes READY: etcd
// is back, and a registration that waited on would lose its restored lease.
// It returns ctx's error if ctx ended.
func pause(ctx context.Context, cli *clientv3.Client, d time.Duration) error {
	tctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	if conn := cli.ActiveConnection(); conn != nil {
		if st := conn.GetState(); st != connectivity.Ready {
			for conn.WaitForStateChange(tctx, st) {
				if st = conn.GetState(); st == connectivity.Ready {
					return ctx.Err()
				}
			}
		}
	}
	<-tctx.Done()
	return ctx.Err()
}

// permanent reports errors that retrying will not cure.
func permanent(err error) bool {
	code := status.Code(err) // a gRPC status, possibly wrapped
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		code = ee.Code()
	}
	switch code {
	case codes.InvalidArgument, codes.PermissionDenied, codes.Unauthenticated:
		return true
	}
	return false
}

// run owns the registration from the first put until Close.
func (r *Registration) run(h *held) {
	defer close(r.loopDone)
	for {
		lost := r.keep(h)
		h.cancel()
		if !lost {
			return
		}
		r.log.Warn("lease lost; registering again", zap.Int64("lease", int64(h.lease)))
		// A short jitter spreads a fleet whose leases went at once (etcd#15247).
		t := time.NewTimer(rand.N(backoffMin))
		select {
		case <-t.C:
		case <-r.ctx.Done():
			t.Stop()
			return
		}
		var err error
		if h, err = r.registerRetry(r.ctx, false); err != nil {
			return // only when Close was called
		}
		r.log.Info("registered again", zap.Int64("lease", int64(h.lease)))
	}
}

// keep holds one lease until it is lost (true) or Close is called (false).
// It watches the key and puts it back when someone deleted it.
func (r *Registration) keep(h *held) (lost bool) {
	var (
		wch     clientv3.WatchChan
		wcancel context.CancelFunc = func() {}
		bo                         = jitterBackoff{min: backoffMin, max: backoffMax}
	)
	defer func() { wcancel() }()
	watch := func(rev int64) {
		wcancel()
		var wctx context.Context
		wctx, wcancel = context.WithCancel(r.ctx)
		// WithRequireLeader: a watch on a member cut off from its peers would
		// hang silently (etcd#8980); this one is cancelled and re-made instead.
		wch = r.cli.Watch(clientv3.WithRequireLeader(wctx), r.key, clientv3.WithRev(rev+1))
	}
	watch(h.rev)
	repair := time.NewTimer(0) // fires while the key must be checked
	repair.Stop()
	defer repair.Stop()

	for {
		select {
		case <-r.ctx.Done():
			return false
		case _, ok := <-h.ka:
			if !ok {
				return true
			}
		case wr, ok := <-wch:
			if !ok || wr.Err() != nil {
				// Compacted, leader lost, stream ended: look at the key, then watch again.
				wch = nil
				repair.Reset(0)
				continue
			}
			for _, ev := range wr.Events {
				if ev.Type == mvccpb.DELETE || clientv3.LeaseID(ev.Kv.Lease) != h.lease {
					wch = nil
					repair.Reset(0)
				}
			}
		case <-repair.C:
			rev, err := r.ensure(h.lease)
			switch {
			case errors.Is(err, rpctypes.ErrLeaseNotFound):
				return true
			case err != nil:
				r.log.Warn("checking the key failed; retrying", zap.Error(err))
				repair.Reset(bo.next())
			default:
				bo.reset()
				watch(rev)
			}
		}
	}
}

// ensure puts the key back under lease if it is missing, and returns the
// revision to watch from. A key held by another lease (a second registrar
// with the same id) is left alone and logged; we put it back when it goes.
func (r *Registration) ensure(lease clientv3.LeaseID) (int64, error) {
	ctx, cancel := context.WithTimeout(r.ctx, r.opTimeout())
	defer cancel()
	resp, err := r.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(r.key), "=", 0)).
		Then(clientv3.OpPut(r.key, r.value, clientv3.WithLease(lease))).
		Else(clientv3.OpGet(r.key)).Commit()
	if err != nil {
		return 0, err
	}
	if resp.Succeeded {
		r.log.Warn("key was deleted by someone else; put it back", zap.Int64("lease", int64(lease)))
	} else if kvs := resp.Responses[0].GetResponseRange().GetKvs(); len(kvs) == 1 && clientv3.LeaseID(kvs[0].Lease) != lease {
		r.log.Warn("key is held by another lease (same id registered twice?); will take it when it goes",
			zap.Int64("ours", int64(lease)), zap.Int64("theirs", kvs[0].Lease))
	}
	return resp.Header.Revision, nil
}
