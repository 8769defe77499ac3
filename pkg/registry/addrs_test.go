package registry

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// A registration may list several ports in addrs: addr first, each once;
// addr stays required (older gateways read it alone).
func TestParseBackendAddrs(t *testing.T) {
	for _, tc := range []struct{ val, addr, addrs string }{
		{`{"addr":"10.0.0.1:9000"}`, "10.0.0.1:9000", ""},
		{`{"addr":"10.0.0.1:9000","addrs":["10.0.0.1:9000"]}`, "10.0.0.1:9000", ""},
		{`{"addr":"10.0.0.1:9000","addrs":["10.0.0.1:9001","10.0.0.1:9002"]}`, "10.0.0.1:9000", "10.0.0.1:9000 10.0.0.1:9001 10.0.0.1:9002"},
		{`{"addr":"10.0.0.1:9000","addrs":["10.0.0.1:9000","10.0.0.1:9001","10.0.0.1:9001"]}`, "10.0.0.1:9000", "10.0.0.1:9000 10.0.0.1:9001"},
		{`{"addr":"n.svc:9000","addrs":["n.svc:9001"]}`, "n.svc:9000", "n.svc:9000 n.svc:9001"},
	} {
		b, err := ParseBackend("n1", []byte(tc.val))
		if err != nil {
			t.Fatalf("%s: %v", tc.val, err)
		}
		if b.Addr != tc.addr || strings.Join(b.Addrs, " ") != tc.addrs {
			t.Errorf("%s: addr %q addrs %q, want %q %q", tc.val, b.Addr, b.Addrs, tc.addr, tc.addrs)
		}
	}
	many := make([]string, MaxAddrs+1)
	for i := range many {
		many[i] = `"10.0.0.1:` + string(rune('1'+i%9)) + `"`
	}
	for name, v := range map[string]string{
		"addrs without addr": `{"addrs":["10.0.0.1:9000"]}`,
		"bad port in addrs":  `{"addr":"10.0.0.1:9000","addrs":["10.0.0.1:0"]}`,
		"bad host in addrs":  `{"addr":"10.0.0.1:9000","addrs":["a b:9000"]}`,
		"not a list":         `{"addr":"10.0.0.1:9000","addrs":"10.0.0.1:9001"}`,
		"too many":           `{"addr":"10.0.0.1:9000","addrs":[` + strings.Join(many, ",") + `]}`,
	} {
		if _, err := ParseBackend("n1", []byte(v)); !errors.Is(err, ErrBadValue) {
			t.Errorf("%s: err = %v, want ErrBadValue", name, err)
		}
	}
	if !slices.Equal(backendAddrsOrNil(t), nil) {
		t.Error("one address gives addrs")
	}
}

func backendAddrsOrNil(t *testing.T) []string {
	b, err := ParseBackend("n1", []byte(`{"addr":"10.0.0.1:9000","addrs":[]}`))
	if err != nil {
		t.Fatal(err)
	}
	return b.Addrs
}
