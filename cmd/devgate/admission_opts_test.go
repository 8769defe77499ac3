package main

import (
	"testing"
	"time"

	"github.com/devgate/devgate/pkg/config"
	"github.com/devgate/devgate/pkg/proxy"
)

// The admission section reaches the proxy: slowStart 0s is the proxy's
// "none" (negative), unset is its default.
func TestAdmissionOptions(t *testing.T) {
	const base = "backends: [{id: b1, addr: '127.0.0.1:9101'}]\n"
	for _, tc := range []struct {
		doc  string
		want proxy.Admission
	}{
		{"", proxy.Admission{MaxWait: 30 * time.Second, SlowStart: 60 * time.Second}},
		{"admission: {loginsPerSecond: 250, maxWait: 5s, slowStart: 0s}", proxy.Admission{LoginsPerSecond: 250, MaxWait: 5 * time.Second, SlowStart: -1}},
		{"admission: {slowStart: 90s}", proxy.Admission{MaxWait: 30 * time.Second, SlowStart: 90 * time.Second}},
	} {
		cfg, err := config.Parse([]byte(base + tc.doc + "\n"))
		if err != nil {
			t.Fatal(err)
		}
		p, err := newProxy(cfg, proxy.NewAtomicRing(nil), nil)
		if err != nil {
			t.Fatal(err)
		}
		if p.Admission != tc.want {
			t.Errorf("%q: proxy.Admission %+v, want %+v", tc.doc, p.Admission, tc.want)
		}
	}
}
