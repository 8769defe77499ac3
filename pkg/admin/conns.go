package admin

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/devgate/devgate/api/devgate/admin/v1"
	"github.com/devgate/devgate/pkg/proxy"
	"github.com/devgate/devgate/pkg/registry"
)

// Page sizes of ListConnections: the default, and the most a page (and a
// peer's LocalConnections answer) holds, so a caller cannot make a
// replica build an answer of every connection it has.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
)

// maxDevid and maxKickReason bound what a caller sends.
const (
	maxDevid      = 1024
	maxKickReason = 256
)

func checkDevid(d string) error {
	if d == "" || len(d) > maxDevid {
		return status.Error(codes.InvalidArgument, "devid: 1..1024 bytes")
	}
	return nil
}

// FindDevice answers with every live connection of a device in the fleet.
func (s *Service) FindDevice(ctx context.Context, req *adminv1.FindDeviceRequest) (*adminv1.FindDeviceResponse, error) {
	if err := checkDevid(req.Devid); err != nil {
		return nil, err
	}
	resp := &adminv1.FindDeviceResponse{}
	var mu sync.Mutex
	resp.Partial = s.eachGateway(ctx, func(ctx context.Context, gw registry.Gateway, c adminv1.AdminClient) error {
		r, err := s.localOrPeerConns(ctx, gw, c, &adminv1.LocalConnectionsRequest{Devid: req.Devid})
		if err != nil {
			return err
		}
		mu.Lock()
		resp.Connections = append(resp.Connections, r.Connections...)
		mu.Unlock()
		return nil
	})
	sortConns(resp.Connections)
	return resp, nil
}

// KickDevice closes every live connection of a device in the fleet.
func (s *Service) KickDevice(ctx context.Context, req *adminv1.KickDeviceRequest) (*adminv1.KickDeviceResponse, error) {
	if err := checkKick(req); err != nil {
		return nil, err
	}
	resp := &adminv1.KickDeviceResponse{}
	var mu sync.Mutex
	resp.Partial = s.eachGateway(ctx, func(ctx context.Context, gw registry.Gateway, c adminv1.AdminClient) error {
		var r *adminv1.KickDeviceResponse
		var err error
		if c == nil {
			r, err = s.LocalKick(ctx, req)
		} else {
			r, err = c.LocalKick(ctx, req)
		}
		if err != nil {
			return err
		}
		mu.Lock()
		resp.Kicked = append(resp.Kicked, r.Kicked...)
		mu.Unlock()
		return nil
	})
	sortConns(resp.Kicked)
	return resp, nil
}

func checkKick(req *adminv1.KickDeviceRequest) error {
	if err := checkDevid(req.Devid); err != nil {
		return err
	}
	if len(req.Reason) > maxKickReason {
		return status.Error(codes.InvalidArgument, "reason: up to 256 bytes")
	}
	return nil
}

// LocalConnections lists this replica's live connections.
func (s *Service) LocalConnections(_ context.Context, req *adminv1.LocalConnectionsRequest) (*adminv1.LocalConnectionsResponse, error) {
	if req.Devid != "" {
		if err := checkDevid(req.Devid); err != nil {
			return nil, err
		}
		return &adminv1.LocalConnectionsResponse{Connections: s.connsPB(s.Proxy.FindDevice(req.Devid))}, nil
	}
	f := proxy.ConnFilter{Backend: req.Backend, Limit: MaxPageSize}
	if req.Limit < 0 || req.AfterId > 1<<32-1 {
		return nil, status.Error(codes.InvalidArgument, "limit: not negative; after_id: a connection's id")
	}
	if req.Limit > 0 {
		f.Limit = min(int(req.Limit), MaxPageSize)
	}
	if req.MinAge != nil {
		if err := req.MinAge.CheckValid(); err != nil || req.MinAge.AsDuration() < 0 {
			return nil, status.Error(codes.InvalidArgument, "min_age: a duration, not negative")
		}
		f.MinAge = req.MinAge.AsDuration()
	}
	if req.AfterSince != nil {
		f.After = proxy.ConnCursor{Since: req.AfterSince.AsTime(), ID: uint32(req.AfterId)}
	}
	infos, more := s.Proxy.ListConns(f)
	return &adminv1.LocalConnectionsResponse{Connections: s.connsPB(infos), More: more}, nil
}

// LocalKick closes a device's live connections on this replica.
func (s *Service) LocalKick(ctx context.Context, req *adminv1.KickDeviceRequest) (*adminv1.KickDeviceResponse, error) {
	if err := checkKick(req); err != nil {
		return nil, err
	}
	kicked := s.Proxy.Kick(req.Devid)
	c, _ := CallerFrom(ctx)
	s.log().Info("device kicked", zap.String("devid", printable(req.Devid)), zap.Int("connections", len(kicked)),
		zap.String("reason", req.Reason), zap.String("by", c.Principal))
	return &adminv1.KickDeviceResponse{Kicked: s.connsPB(kicked)}, nil
}

func (s *Service) connsPB(infos []proxy.ConnInfo) []*adminv1.Connection {
	out := make([]*adminv1.Connection, 0, len(infos))
	for _, i := range infos {
		c := &adminv1.Connection{Devid: printable(i.Device), Gateway: s.ID, Backend: i.Backend,
			Since: timestamppb.New(i.Since), BytesIn: i.BytesIn, BytesOut: i.BytesOut,
			Tries: uint32(i.Tries), Moves: uint32(i.Moves), Id: uint64(i.ID)}
		if i.Client.IsValid() {
			c.ClientAddr = i.Client.String()
		}
		out = append(out, c)
	}
	return out
}

// printable is a device id as a proto string (UTF-8): escaped if it is
// not valid UTF-8.
func printable(d string) string {
	if utf8.ValidString(d) {
		return d
	}
	q := strconv.QuoteToASCII(d)
	return q[1 : len(q)-1]
}

func sortConns(cs []*adminv1.Connection) {
	sort.Slice(cs, func(i, j int) bool { return connLess(cs[i], cs[j]) })
}

func connLess(a, b *adminv1.Connection) bool {
	if a.Gateway != b.Gateway {
		return a.Gateway < b.Gateway
	}
	if c := a.Since.AsTime().Compare(b.Since.AsTime()); c != 0 {
		return c < 0
	}
	return a.Id < b.Id
}

// localOrPeerConns asks this replica (c nil) or a peer for its connections.
func (s *Service) localOrPeerConns(ctx context.Context, _ registry.Gateway, c adminv1.AdminClient, req *adminv1.LocalConnectionsRequest) (*adminv1.LocalConnectionsResponse, error) {
	if c == nil {
		return s.LocalConnections(ctx, req)
	}
	return c.LocalConnections(ctx, req)
}

// gateways are the replicas a fleet-wide call asks, in id order: the
// registered ones, or this one alone (static list, or not registered yet).
func (s *Service) gateways() []registry.Gateway {
	var gws []registry.Gateway
	self := false
	if snap := s.Watcher.Snapshot(); snap != nil {
		for _, gw := range snap.Gateways {
			gws = append(gws, gw)
			self = self || gw.ID == s.ID
		}
	}
	if !self {
		gws = append(gws, registry.Gateway{ID: s.ID})
	}
	sort.Slice(gws, func(i, j int) bool { return gws[i].ID < gws[j].ID })
	return gws
}

// eachGateway runs f for every replica at once: with c nil for this one,
// with a client to the peer (under the peer timeout) for the others. It
// returns which did not answer.
func (s *Service) eachGateway(ctx context.Context, f func(context.Context, registry.Gateway, adminv1.AdminClient) error) *adminv1.Partial {
	partial := &adminv1.Partial{Errors: map[string]string{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, gw := range s.gateways() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := s.onGateway(ctx, gw, f)
			if err != nil {
				mu.Lock()
				partial.Partial = true
				partial.Errors[gw.ID] = err.Error()
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return partial
}

func (s *Service) onGateway(ctx context.Context, gw registry.Gateway, f func(context.Context, registry.Gateway, adminv1.AdminClient) error) error {
	if gw.ID == s.ID {
		return f(ctx, gw, nil)
	}
	return s.withPeer(ctx, gw, func(ctx context.Context, c adminv1.AdminClient) error { return f(ctx, gw, c) })
}

// pageToken is where the next page of ListConnections starts: after the
// connection (Since, ID) on gateway G.
type pageToken struct {
	G  string `json:"g"`
	S  int64  `json:"s"` // unix nanoseconds
	ID uint64 `json:"i"`
}

func (t pageToken) String() string {
	b, _ := json.Marshal(t)
	return base64.RawURLEncoding.EncodeToString(b)
}

func parsePageToken(v string) (pageToken, error) {
	var t pageToken
	if v == "" {
		return t, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(v)
	if err != nil || len(v) > 512 || json.Unmarshal(b, &t) != nil || t.G == "" {
		return t, status.Error(codes.InvalidArgument, "page_token: not one this API returned")
	}
	return t, nil
}

// ListConnections pages through the fleet's live connections: replica by
// replica in id order, each in (since, id) order, asking a replica only
// while the page has room.
func (s *Service) ListConnections(ctx context.Context, req *adminv1.ListConnectionsRequest) (*adminv1.ListConnectionsResponse, error) {
	tok, err := parsePageToken(req.PageToken)
	if err != nil {
		return nil, err
	}
	size := int(req.PageSize)
	switch {
	case size < 0:
		return nil, status.Error(codes.InvalidArgument, "page_size: not negative")
	case size == 0:
		size = DefaultPageSize
	case size > MaxPageSize:
		size = MaxPageSize
	}
	resp := &adminv1.ListConnectionsResponse{Partial: &adminv1.Partial{Errors: map[string]string{}}}
	gws := s.gateways()
	if req.Gateway != "" && !slices.ContainsFunc(gws, func(g registry.Gateway) bool { return g.ID == req.Gateway }) {
		return nil, status.Errorf(codes.NotFound, "gateway %q is not registered; 'devgate ctl gateways' lists the ids", req.Gateway)
	}
	for i, gw := range gws {
		if gw.ID < tok.G || (req.Gateway != "" && gw.ID != req.Gateway) {
			continue
		}
		lr := &adminv1.LocalConnectionsRequest{Backend: req.Backend, MinAge: req.MinAge, Limit: int32(size - len(resp.Connections))}
		if gw.ID == tok.G {
			lr.AfterSince, lr.AfterId = timestamppb.New(time.Unix(0, tok.S)), tok.ID
		}
		var r *adminv1.LocalConnectionsResponse
		err := s.onGateway(ctx, gw, func(ctx context.Context, gw registry.Gateway, c adminv1.AdminClient) error {
			var err error
			r, err = s.localOrPeerConns(ctx, gw, c, lr)
			return err
		})
		if status.Code(err) == codes.InvalidArgument {
			return nil, err
		}
		if err != nil {
			resp.Partial.Partial = true
			resp.Partial.Errors[gw.ID] = err.Error()
			continue
		}
		resp.Connections = append(resp.Connections, r.Connections...)
		if len(resp.Connections) >= size {
			if r.More || laterGateway(gws[i+1:], req.Gateway) {
				last := resp.Connections[len(resp.Connections)-1]
				resp.NextPageToken = pageToken{G: gw.ID, S: last.Since.AsTime().UnixNano(), ID: last.Id}.String()
			}
			break
		}
	}
	return resp, nil
}

// laterGateway says whether a replica after the current one is still to
// be listed.
func laterGateway(rest []registry.Gateway, only string) bool {
	return len(rest) > 0 && only == ""
}
