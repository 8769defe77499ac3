package config

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestDialSourceAddrs(t *testing.T) {
	c, err := Parse([]byte("backends: [{id: b1, addr: '10.0.0.1:9000'}]\ndial: {sourceAddrs: [10.0.1.1, 10.0.1.2]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	srcs, err := c.Dial.Sources()
	if err != nil || !slices.Equal(srcs, []netip.Addr{netip.MustParseAddr("10.0.1.1"), netip.MustParseAddr("10.0.1.2")}) {
		t.Fatalf("sources %v, %v", srcs, err)
	}
	for _, tc := range []struct{ name, doc, want string }{
		{"not an ip", "dial: {sourceAddrs: [eth0]}", `dial.sourceAddrs[0] "eth0": not an IP address`},
		{"with a port", "dial: {sourceAddrs: ['10.0.1.1:1']}", `dial.sourceAddrs[0] "10.0.1.1:1": not an IP address`},
		{"unspecified", "dial: {sourceAddrs: [0.0.0.0]}", `not a unicast address of this host`},
		{"twice", "dial: {sourceAddrs: [10.0.1.1, 10.0.1.1]}", `dial.sourceAddrs[1] "10.0.1.1": listed twice`},
		{"mixed", "dial: {sourceAddrs: [10.0.1.1, 'fd00::1']}", `mixes IPv4 and IPv6`},
		{"family", "dial: {sourceAddrs: ['fd00::1']}", `backends[0] 10.0.0.1:9000, dial.sourceAddrs fd00::1: dial.sourceAddrs and the backend are of different address families`},
	} {
		_, err := Parse([]byte("backends: [{id: b1, addr: '10.0.0.1:9000'}]\n" + tc.doc + "\n"))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
	}
	_, err = Parse([]byte("backends: [{id: b1, addr: '[fd00::9]:9000'}]\ndial: {sourceAddrs: [10.0.1.1]}\n"))
	if !errors.Is(err, ErrSourceFamily) {
		t.Errorf("IPv6 backend, IPv4 sources: %v", err)
	}
	// A host name is resolved later: not checked here.
	if _, err := Parse([]byte("backends: [{id: b1, addr: 'netty.svc:9000'}]\ndial: {sourceAddrs: ['fd00::1']}\n")); err != nil {
		t.Error(err)
	}
}

func TestStaticBackendAddrs(t *testing.T) {
	c, err := Parse([]byte("backends:\n  - {id: b1, addrs: ['10.0.0.1:9000', '10.0.0.1:9001']}\n  - {id: b2, addr: '10.0.0.2:9000', addrs: ['10.0.0.2:9001']}\n  - {id: b3, addr: '10.0.0.3:9000'}\n"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := c.BuildRing()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, b := range r.Backends() {
		got[b.ID] = b.Addr + " | " + strings.Join(b.Addrs, " ")
	}
	want := map[string]string{"b1": "10.0.0.1:9000 | 10.0.0.1:9000 10.0.0.1:9001",
		"b2": "10.0.0.2:9000 | 10.0.0.2:9000 10.0.0.2:9001", "b3": "10.0.0.3:9000 | "}
	for id, w := range want {
		if got[id] != w {
			t.Errorf("%s: %q, want %q", id, got[id], w)
		}
	}
	_, err = Parse([]byte("backends: [{id: b1, addrs: ['10.0.0.1:9000', '10.0.0.1:0']}]\n"))
	if err == nil || !strings.Contains(err.Error(), `backends[0].addrs[1]: "10.0.0.1:0": port 0 cannot be dialled`) {
		t.Errorf("bad port in addrs: %v", err)
	}
}
