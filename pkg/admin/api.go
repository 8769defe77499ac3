package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	adminv1 "github.com/devgate/devgate/api/devgate/admin/v1"
)

// APIPrefix is where the JSON API is served: POST APIPrefix+<Method>.
const APIPrefix = "/api/v1/"

// maxAPIBody bounds a JSON API request body; the largest request is a
// few ids and numbers.
const maxAPIBody = 64 << 10

// maxAPIStream bounds how long a streamed call (Rebalance) may run over
// the JSON API; the server's write timeout is extended to it.
const maxAPIStream = 15 * time.Minute

// apiHidden are the calls replicas make to each other: not for a page.
var apiHidden = map[string]bool{"LocalRebalance": true, "LocalConnections": true, "LocalKick": true}

// API serves the admin service's calls as JSON (protojson of the same
// messages) through the same Auth interceptors as the gRPC server, so a
// call is authorized, audited and answered by the same code either way.
type API struct {
	Server  adminv1.AdminServer
	Auth    *Auth
	History *History // nil: History answers Unimplemented
	ID      string   // this replica, in History's answer
}

// ErrorReply is the body of a failed JSON API call.
type ErrorReply struct {
	Code    string `json:"code"` // the gRPC code, such as PermissionDenied
	Message string `json:"message"`
}

var marshal = protojson.MarshalOptions{EmitUnpopulated: true}

func (api *API) register(mux *http.ServeMux) {
	unary := map[string]grpc.MethodDesc{}
	for _, m := range adminv1.Admin_ServiceDesc.Methods {
		if !apiHidden[m.MethodName] {
			unary[m.MethodName] = m
		}
	}
	streams := map[string]grpc.StreamDesc{}
	for _, s := range adminv1.Admin_ServiceDesc.Streams {
		if s.ServerStreams && !apiHidden[s.StreamName] {
			streams[s.StreamName] = s
		}
	}
	mux.HandleFunc("POST "+APIPrefix+"{method}", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("method")
		body, err := readBody(w, r)
		if errors.Is(err, errBodyTooBig) {
			b, _ := json.Marshal(ErrorReply{Code: codes.ResourceExhausted.String(), Message: err.Error()})
			writeJSON(w, http.StatusRequestEntityTooLarge, b)
			return
		}
		if err != nil {
			writeAPIError(w, err)
			return
		}
		ctx := callContext(r)
		switch m, s := unary[name], streams[name]; {
		case name == HistoryMethod:
			api.history(ctx, w)
		case name == WhoamiMethod:
			api.whoami(ctx, w)
		case m.Handler != nil:
			api.unary(ctx, w, m, body)
		case s.Handler != nil:
			api.stream(ctx, w, s, body)
		default:
			writeAPIError(w, status.Errorf(codes.NotFound, "no method %q", name))
		}
	})
}

var errBodyTooBig = fmt.Errorf("request body over %d bytes", maxAPIBody)

// readBody reads a bounded JSON body. The JSON content type is required:
// a cross-site form or text/plain post cannot be one without a CORS
// preflight, which this server does not answer.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		return nil, status.Error(codes.InvalidArgument, "Content-Type must be application/json")
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxAPIBody))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return nil, errBodyTooBig
	}
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "reading the request: %v", err)
	}
	return b, nil
}

// callContext gives the call what the gRPC server would: the bearer token
// as metadata (nothing else: no peer or on-behalf header from a browser)
// and the peer with its verified client certificate when served with TLS.
func callContext(r *http.Request) context.Context {
	md := metadata.MD{}
	if v := r.Header.Values("Authorization"); len(v) > 0 {
		md["authorization"] = v
	}
	ctx := metadata.NewIncomingContext(r.Context(), md)
	p := &peer.Peer{}
	if ap, err := net.ResolveTCPAddr("tcp", r.RemoteAddr); err == nil {
		p.Addr = ap
	}
	if r.TLS != nil {
		p.AuthInfo = credentials.TLSInfo{State: *r.TLS}
	}
	return peer.NewContext(ctx, p)
}

func decoder(body []byte) func(any) error {
	return func(m any) error {
		if len(body) == 0 {
			return nil
		}
		if err := protojson.Unmarshal(body, m.(proto.Message)); err != nil {
			return status.Errorf(codes.InvalidArgument, "request: %v", err)
		}
		return nil
	}
}

func (api *API) unary(ctx context.Context, w http.ResponseWriter, m grpc.MethodDesc, body []byte) {
	resp, err := m.Handler(api.Server, ctx, decoder(body), api.Auth.UnaryInterceptor())
	if err != nil {
		writeAPIError(w, err)
		return
	}
	b, err := marshal.Marshal(resp.(proto.Message))
	if err != nil {
		writeAPIError(w, status.Errorf(codes.Internal, "encoding the reply: %v", err))
		return
	}
	writeJSON(w, http.StatusOK, b)
}

// stream answers a server-streaming call as newline-delimited JSON, one
// message a line, flushed as sent. An error after the first message ends
// the stream with a line {"error": ErrorReply}.
func (api *API) stream(ctx context.Context, w http.ResponseWriter, s grpc.StreamDesc, body []byte) {
	ctx, cancel := context.WithTimeout(ctx, maxAPIStream)
	defer cancel()
	rc := http.NewResponseController(w)
	rc.SetWriteDeadline(time.Now().Add(maxAPIStream))
	hs := &httpStream{ctx: ctx, w: w, rc: rc, dec: decoder(body)}
	info := &grpc.StreamServerInfo{FullMethod: adminService + s.StreamName, IsServerStream: true}
	err := api.Auth.StreamInterceptor()(api.Server, hs, info, s.Handler)
	switch {
	case err == nil && !hs.sent: // no message at all: still a valid empty stream
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
	case err != nil && !hs.sent:
		writeAPIError(w, err)
	case err != nil:
		st := status.Convert(err)
		line, _ := json.Marshal(map[string]ErrorReply{"error": {st.Code().String(), st.Message()}})
		w.Write(append(line, '\n'))
	}
}

// httpStream is the grpc.ServerStream of a streamed JSON API call.
type httpStream struct {
	ctx  context.Context
	w    http.ResponseWriter
	rc   *http.ResponseController
	dec  func(any) error
	recv bool
	sent bool
}

func (s *httpStream) SetHeader(metadata.MD) error  { return nil }
func (s *httpStream) SendHeader(metadata.MD) error { return nil }
func (s *httpStream) SetTrailer(metadata.MD)       {}
func (s *httpStream) Context() context.Context     { return s.ctx }

func (s *httpStream) SendMsg(m any) error {
	b, err := marshal.Marshal(m.(proto.Message))
	if err != nil {
		return status.Errorf(codes.Internal, "encoding the reply: %v", err)
	}
	if !s.sent {
		s.sent = true
		h := s.w.Header()
		h.Set("Content-Type", "application/x-ndjson")
		h.Set("Cache-Control", "no-store")
		s.w.WriteHeader(http.StatusOK)
	}
	if _, err := s.w.Write(append(b, '\n')); err != nil {
		return status.Errorf(codes.Canceled, "client gone: %v", err)
	}
	s.rc.Flush()
	return nil
}

// RecvMsg gives the request once, as a client stream of one message.
func (s *httpStream) RecvMsg(m any) error {
	if s.recv {
		return io.EOF
	}
	s.recv = true
	return s.dec(m)
}

func (api *API) history(ctx context.Context, w http.ResponseWriter) {
	if _, err := api.checkRead(ctx, HistoryMethod); err != nil {
		writeAPIError(w, err)
		return
	}
	if api.History == nil {
		writeAPIError(w, status.Error(codes.Unimplemented, "no history sampler on this replica"))
		return
	}
	b, err := json.Marshal(HistoryReply{Gateway: api.ID, Interval: api.History.interval().String(), Samples: api.History.Samples()})
	if err != nil {
		writeAPIError(w, status.Errorf(codes.Internal, "encoding the reply: %v", err))
		return
	}
	writeJSON(w, http.StatusOK, b)
}

// WhoamiReply says who the caller is to the API: the page shows the admin
// buttons for the admin role.
type WhoamiReply struct {
	Role      string `json:"role"`
	Principal string `json:"principal"`
}

func (api *API) whoami(ctx context.Context, w http.ResponseWriter) {
	c, err := api.checkRead(ctx, WhoamiMethod)
	if err != nil {
		writeAPIError(w, err)
		return
	}
	b, _ := json.Marshal(WhoamiReply{Role: c.Role.String(), Principal: c.Principal})
	writeJSON(w, http.StatusOK, b)
}

// checkRead authorizes the API's own calls (History, Whoami; not gRPC
// methods): any role that can read, refusals counted as gRPC's are.
func (api *API) checkRead(ctx context.Context, name string) (Caller, error) {
	a := api.Auth
	c, err := a.identify(ctx, adminService+name)
	if err == nil && c.Role < RoleRead {
		err = refuse(codes.Unauthenticated, "unauthenticated", "a bearer token or a client certificate is required")
	}
	if err != nil {
		a.refused(ctx, adminService+name, c, err)
	}
	return c, err
}

func writeJSON(w http.ResponseWriter, code int, b []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}

func writeAPIError(w http.ResponseWriter, err error) {
	st := status.Convert(err)
	b, _ := json.Marshal(ErrorReply{Code: st.Code().String(), Message: st.Message()})
	if st.Code() == codes.Unauthenticated {
		w.Header().Set("WWW-Authenticate", `Bearer realm="devgate"`)
	}
	writeJSON(w, HTTPStatus(st.Code()), b)
}

// HTTPStatus maps a gRPC code to the HTTP status of a JSON API reply (the
// mapping grpc-gateway uses).
func HTTPStatus(c codes.Code) int {
	switch c {
	case codes.OK:
		return http.StatusOK
	case codes.Canceled:
		return 499
	case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange:
		return http.StatusBadRequest
	case codes.DeadlineExceeded:
		return http.StatusGatewayTimeout
	case codes.NotFound:
		return http.StatusNotFound
	case codes.AlreadyExists, codes.Aborted:
		return http.StatusConflict
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.Unauthenticated:
		return http.StatusUnauthorized
	case codes.ResourceExhausted:
		return http.StatusTooManyRequests
	case codes.Unimplemented:
		return http.StatusNotImplemented
	case codes.Unavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}
