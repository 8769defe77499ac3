package admin

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/protobuf/encoding/protojson"

	adminv1 "github.com/devgate/devgate/api/devgate/admin/v1"
	"github.com/devgate/devgate/internal/testkit"
)

// apiPost posts body to the JSON API method with a bearer token (if any).
func apiPost(t *testing.T, c *http.Client, base, method, token, body string, hdr ...string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest("POST", base+APIPrefix+method, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

func apiCode(t *testing.T, b []byte) string {
	t.Helper()
	var e ErrorReply
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("error body %q: %v", b, err)
	}
	return e.Code
}

// The JSON API answers with the same service and the same auth as gRPC:
// roles, the audit line, fleet-wide effects, errors mapped to statuses.
func TestJSONAPI(t *testing.T) {
	f := newFleet(t, 2, 3)
	a, b := f.gateways[0], f.gateways[1]
	core, logs := observer.New(zap.InfoLevel)
	auth := &Auth{Tokens: map[string]Role{adminToken: RoleAdmin, readToken: RoleRead}, Names: map[string]string{adminToken: "ops"}, Audit: zap.New(core)}
	hist := &History{}
	hist.Record(time.Now(), 0, 0, a.proxy.Conns())
	srv := httptest.NewServer(NewHTTPHandler(HTTPOptions{API: &API{Server: a.svc, Auth: auth, History: hist, ID: a.id}}))
	t.Cleanup(srv.Close)
	c := srv.Client()

	code, body := apiPost(t, c, srv.URL, "ListBackends", "", "{}")
	if code != http.StatusUnauthorized || apiCode(t, body) != "Unauthenticated" {
		t.Fatalf("no token: %d %s", code, body)
	}
	code, body = apiPost(t, c, srv.URL, "ListBackends", "wrong", "")
	if code != http.StatusUnauthorized {
		t.Fatalf("wrong token: %d %s", code, body)
	}
	code, body = apiPost(t, c, srv.URL, "ListBackends", readToken, "")
	var lb adminv1.ListBackendsResponse
	if code != http.StatusOK || protojson.Unmarshal(body, &lb) != nil || len(lb.Backends) != 3 {
		t.Fatalf("read ListBackends: %d %s", code, body)
	}
	code, body = apiPost(t, c, srv.URL, "Whoami", readToken, "")
	if code != http.StatusOK || !strings.Contains(string(body), `"role":"read"`) {
		t.Fatalf("Whoami: %d %s", code, body)
	}
	drain := `{"id":"b1","deadline":"3600s","reason":"json"}`
	code, body = apiPost(t, c, srv.URL, "DrainBackend", readToken, drain)
	if code != http.StatusForbidden || apiCode(t, body) != "PermissionDenied" {
		t.Fatalf("read-only drain: %d %s", code, body)
	}
	// A browser cannot make itself a peer: only Authorization is passed on.
	code, _ = apiPost(t, c, srv.URL, "DrainBackend", readToken, drain, PeerHeader, "forged")
	if code != http.StatusForbidden {
		t.Fatalf("read-only drain with a peer header: %d", code)
	}
	code, body = apiPost(t, c, srv.URL, "DrainBackend", adminToken, drain)
	if code != http.StatusOK {
		t.Fatalf("admin drain: %d %s", code, body)
	}
	// The drain went through the service: the other replica routes on it.
	resp, err := f.client(b, readToken).ListBackends(ctx5(t), &adminv1.ListBackendsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, be := range resp.Backends {
		if be.Id == "b1" && be.State != adminv1.BackendState_BACKEND_STATE_DRAINING {
			t.Fatalf("b1 on replica %s: %s", b.id, be.State)
		}
	}
	if n := logs.FilterMessage("admin mutation").FilterField(zap.String("principal", "token ops")).Len(); n != 1 {
		t.Fatalf("audit lines of the JSON drain: %d", n)
	}

	for _, tc := range []struct {
		method, ctype, body string
		want                int
	}{
		{"ListBackends", "text/plain", "{}", http.StatusBadRequest},                      // no cross-site simple post
		{"Lookup", "application/json", `{"devid":"d","bogus":1}`, http.StatusBadRequest}, // unknown field
		{"Lookup", "application/json", `{"devid":`, http.StatusBadRequest},
		{"NoSuchMethod", "application/json", "{}", http.StatusNotFound},
		{"LocalRebalance", "application/json", "{}", http.StatusNotFound}, // peers only
		{"Lookup", "application/json", `{"devid":"` + strings.Repeat("x", maxAPIBody) + `"}`, http.StatusRequestEntityTooLarge},
	} {
		req, _ := http.NewRequest("POST", srv.URL+APIPrefix+tc.method, strings.NewReader(tc.body))
		req.Header.Set("Content-Type", tc.ctype)
		req.Header.Set("Authorization", "Bearer "+adminToken)
		r, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		eb, _ := io.ReadAll(r.Body)
		r.Body.Close()
		if r.StatusCode != tc.want || apiCode(t, eb) == "" {
			t.Errorf("%s %s %.40q: %d %s, want %d", tc.method, tc.ctype, tc.body, r.StatusCode, eb, tc.want)
		}
	}
	if r, err := c.Get(srv.URL + APIPrefix + "ListBackends"); err != nil || r.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET: %v %v", r, err)
	} else {
		r.Body.Close()
	}

	code, body = apiPost(t, c, srv.URL, "History", readToken, "")
	var h HistoryReply
	if code != http.StatusOK || json.Unmarshal(body, &h) != nil || h.Gateway != a.id || len(h.Samples) != 1 {
		t.Fatalf("History: %d %s", code, body)
	}
	if code, _ = apiPost(t, c, srv.URL, "History", "", ""); code != http.StatusUnauthorized {
		t.Fatalf("History without a token: %d", code)
	}
}

// Rebalance streams its progress as newline-delimited JSON.
func TestJSONAPIStream(t *testing.T) {
	f := newFleet(t, 1, 2)
	g := f.gateways[0]
	srv := httptest.NewServer(NewHTTPHandler(HTTPOptions{API: &API{Server: g.svc, Auth: g.auth, ID: g.id}}))
	t.Cleanup(srv.Close)
	if code, body := apiPost(t, srv.Client(), srv.URL, "Rebalance", readToken, `{"dryRun":true}`); code != http.StatusForbidden {
		t.Fatalf("read-only rebalance: %d %s", code, body)
	}
	code, body := apiPost(t, srv.Client(), srv.URL, "Rebalance", adminToken, `{"dryRun":true}`)
	if code != http.StatusOK {
		t.Fatalf("rebalance: %d %s", code, body)
	}
	var last adminv1.RebalanceProgress
	n := 0
	for sc := bufio.NewScanner(bytes.NewReader(body)); sc.Scan(); n++ {
		if err := protojson.Unmarshal(sc.Bytes(), &last); err != nil {
			t.Fatalf("line %d %q: %v", n, sc.Text(), err)
		}
	}
	if n == 0 || !last.Done {
		t.Fatalf("%d lines, last %v", n, &last)
	}
}

// A client certificate gives the JSON API its role as it does gRPC's,
// when the HTTP port is served with TLS.
func TestJSONAPIClientCert(t *testing.T) {
	ca := testkit.NewCA(t, "devgate test CA")
	serverCert := testkit.Issue(t, &ca, "server", nil, net.IPv4(127, 0, 0, 1))
	adminCert := testkit.Issue(t, &ca, "ops-client", []string{"ops"}, nil)
	readCert := testkit.Issue(t, &ca, "read-client", []string{ReadOnlyOU}, nil)
	pool := x509.NewCertPool()
	pool.AddCert(ca.TLS.Leaf)
	srv := httptest.NewUnstartedServer(NewHTTPHandler(HTTPOptions{API: &API{Server: stubAdmin{}, Auth: &Auth{Tokens: map[string]Role{}}}}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{serverCert.TLS}, ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: pool}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	client := func(certs ...tls.Certificate) *http.Client {
		return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: certs}}}
	}
	for _, tc := range []struct {
		name  string
		c     *http.Client
		drain int
	}{
		{"no certificate", client(), http.StatusUnauthorized},
		{"read-only certificate", client(readCert.TLS), http.StatusForbidden},
		{"admin certificate", client(adminCert.TLS), http.StatusOK},
	} {
		code, body := apiPost(t, tc.c, srv.URL, "DrainBackend", "", `{"id":"b1"}`)
		if code != tc.drain {
			t.Errorf("%s: drain %d %s, want %d", tc.name, code, body, tc.drain)
		}
		tc.c.CloseIdleConnections()
	}
}

// The page and its scripts are served from the binary with a CSP that
// keeps them to this origin.
func TestUIServed(t *testing.T) {
	h := NewHTTPHandler(HTTPOptions{API: &API{Server: stubAdmin{}, Auth: &Auth{Open: true}}})
	for path, want := range map[string]string{"/ui/": "<title>devgate dashboard</title>", "/ui/app.js": "/api/v1/", "/ui/style.css": "body"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), want) || rec.Header().Get("Content-Security-Policy") == "" {
			t.Errorf("%s: %d %q", path, rec.Code, rec.Header())
		}
	}
	if code, _ := httpGet(t, NewHTTPHandler(HTTPOptions{}), "GET", "/ui/"); code != http.StatusNotFound {
		t.Errorf("/ui/ without the API: %d", code)
	}
}

// FuzzJSONAPI posts arbitrary bodies to every method: a clear 4xx or an
// answer, never a panic or a 5xx from the decoding.
func FuzzJSONAPI(f *testing.F) {
	f.Add("DrainBackend", `{"id":"b1","deadline":"10s"}`)
	f.Add("Lookup", `{"devid":"x","fallbacks":2}`)
	f.Add("Rebalance", `{"dryRun":true}`)
	f.Add("ListBackends", `[]`)
	f.Add("History", `null`)
	h := NewHTTPHandler(HTTPOptions{API: &API{Server: stubAdmin{}, Auth: &Auth{Open: true}, History: &History{}}})
	f.Fuzz(func(t *testing.T, method, body string) {
		req := httptest.NewRequest("POST", "/api/v1/x", strings.NewReader(body))
		req.URL.Path = APIPrefix + method
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 && rec.Code != http.StatusNotImplemented {
			t.Fatalf("%s %q: %d %s", method, body, rec.Code, rec.Body)
		}
	})
}

// FindDevice and KickDevice over JSON reach a device held by another
// replica, through the same fleet-wide service; a read-only token cannot kick.
func TestJSONAPIFindAndKickThroughPeer(t *testing.T) {
	f := newFleet(t, 2, 2)
	a, b := f.gateways[0], f.gateways[1]
	c, backend := login(t, b.addr, "dev-json")
	defer c.Close()
	srv := httptest.NewServer(NewHTTPHandler(HTTPOptions{API: &API{Server: a.svc, Auth: a.auth, ID: a.id}}))
	t.Cleanup(srv.Close)
	code, body := apiPost(t, srv.Client(), srv.URL, "FindDevice", readToken, `{"devid":"dev-json"}`)
	var found adminv1.FindDeviceResponse
	if code != http.StatusOK || protojson.Unmarshal(body, &found) != nil || len(found.Connections) != 1 ||
		found.Connections[0].Gateway != b.id || found.Connections[0].Backend != backend {
		t.Fatalf("FindDevice through %s: %d %s; want on %s, %s", a.id, code, body, b.id, backend)
	}
	if code, body = apiPost(t, srv.Client(), srv.URL, "KickDevice", readToken, `{"devid":"dev-json"}`); code != http.StatusForbidden {
		t.Fatalf("read-only kick: %d %s", code, body)
	}
	code, body = apiPost(t, srv.Client(), srv.URL, "KickDevice", adminToken, `{"devid":"dev-json","reason":"json test"}`)
	var kicked adminv1.KickDeviceResponse
	if code != http.StatusOK || protojson.Unmarshal(body, &kicked) != nil || len(kicked.Kicked) != 1 {
		t.Fatalf("kick: %d %s", code, body)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, c); err != nil {
		t.Fatalf("the kicked connection did not end cleanly: %v", err)
	}
}
