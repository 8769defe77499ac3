package main

import (
	"bytes"
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	adminv1 "github.com/devgate/devgate/api/devgate/admin/v1"
)

// fakeAdmin answers with canned data and records what the CLI sent.
type fakeAdmin struct {
	adminv1.UnimplementedAdminServer

	mu   sync.Mutex
	auth []string        // authorization metadata of each call
	reqs []proto.Message // requests, in order
	err  error           // when set, every call fails with it

	backends []*adminv1.ListBackendsResponse // answers in turn; the last repeats
	gateways []*adminv1.ListGatewaysResponse
	nb, ng   int
	onPoll   func(n int) // after the nth list call (from 1), e.g. to press ctrl-C

	drain    *adminv1.Drain
	undrain  bool
	lookup   *adminv1.LookupResponse
	gateway  *adminv1.Gateway
	progress []*adminv1.RebalanceProgress
	hang     bool // after the progress, wait until the client goes
}

func (f *fakeAdmin) record(ctx context.Context, req proto.Message) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	md, _ := metadata.FromIncomingContext(ctx)
	f.auth = append(f.auth, strings.Join(md.Get("authorization"), ","))
	f.reqs = append(f.reqs, req)
	return f.err
}

func (f *fakeAdmin) requests() []proto.Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]proto.Message(nil), f.reqs...)
}

func (f *fakeAdmin) polled(n *int) int {
	f.mu.Lock()
	*n++
	i, cb := *n, f.onPoll
	f.mu.Unlock()
	if cb != nil {
		cb(i)
	}
	return i - 1
}

func (f *fakeAdmin) ListBackends(ctx context.Context, req *adminv1.ListBackendsRequest) (*adminv1.ListBackendsResponse, error) {
	if err := f.record(ctx, req); err != nil {
		return nil, err
	}
	return f.backends[min(f.polled(&f.nb), len(f.backends)-1)], nil
}

func (f *fakeAdmin) ListGateways(ctx context.Context, req *adminv1.ListGatewaysRequest) (*adminv1.ListGatewaysResponse, error) {
	if err := f.record(ctx, req); err != nil {
		return nil, err
	}
	return f.gateways[min(f.polled(&f.ng), len(f.gateways)-1)], nil
}

func (f *fakeAdmin) DrainBackend(ctx context.Context, req *adminv1.DrainBackendRequest) (*adminv1.DrainBackendResponse, error) {
	if err := f.record(ctx, req); err != nil {
		return nil, err
	}
	return &adminv1.DrainBackendResponse{Drain: f.drain}, nil
}

func (f *fakeAdmin) UndrainBackend(ctx context.Context, req *adminv1.UndrainBackendRequest) (*adminv1.UndrainBackendResponse, error) {
	if err := f.record(ctx, req); err != nil {
		return nil, err
	}
	return &adminv1.UndrainBackendResponse{WasDraining: f.undrain}, nil
}

func (f *fakeAdmin) Lookup(ctx context.Context, req *adminv1.LookupRequest) (*adminv1.LookupResponse, error) {
	if err := f.record(ctx, req); err != nil {
		return nil, err
	}
	return f.lookup, nil
}

func (f *fakeAdmin) DrainGateway(ctx context.Context, req *adminv1.DrainGatewayRequest) (*adminv1.DrainGatewayResponse, error) {
	if err := f.record(ctx, req); err != nil {
		return nil, err
	}
	return &adminv1.DrainGatewayResponse{Gateway: f.gateway}, nil
}

func (f *fakeAdmin) Rebalance(req *adminv1.RebalanceRequest, stream grpc.ServerStreamingServer[adminv1.RebalanceProgress]) error {
	if err := f.record(stream.Context(), req); err != nil {
		return err
	}
	for _, p := range f.progress {
		if err := stream.Send(p); err != nil {
			return err
		}
	}
	if f.hang {
		<-stream.Context().Done()
	}
	return nil
}

// startFake serves f on 127.0.0.1 until the test ends, checks for leaked
// goroutines then, and keeps the caller's environment out of the CLI.
func startFake(t *testing.T, f *fakeAdmin, opts ...grpc.ServerOption) string {
	t.Helper()
	t.Cleanup(func() { goleak.VerifyNone(t) }) // registered first, so it runs last
	t.Setenv("DEVGATE_TOKEN", "")
	t.Setenv("DEVGATE_ADMIN_ADDR", "")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(opts...)
	adminv1.RegisterAdminServer(s, f)
	served := make(chan struct{})
	go func() { defer close(served); s.Serve(l) }()
	t.Cleanup(func() { s.Stop(); <-served })
	return l.Addr().String()
}

// ctl runs the CLI in-process and returns what it printed and its exit code.
func ctl(t *testing.T, args ...string) (stdout, stderr string, code int) {
	return ctlCtx(t, context.Background(), args...)
}

func ctlCtx(t *testing.T, ctx context.Context, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errw bytes.Buffer
	code = ctlMainCtx(ctx, args, &out, &errw)
	t.Logf("devgate ctl %s -> %d\n%s%s", strings.Join(args, " "), code, out.String(), errw.String())
	return out.String(), errw.String(), code
}

// fastPoll makes --wait poll every few milliseconds for this test.
func fastPoll(t *testing.T) {
	old := ctlPollEvery
	ctlPollEvery = 5 * time.Millisecond
	t.Cleanup(func() { ctlPollEvery = old })
}
