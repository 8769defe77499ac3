package metrics

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/devgate/devgate/pkg/demo"
	"github.com/devgate/devgate/pkg/proxy"
	"github.com/devgate/devgate/pkg/ring"
)

// Login pacing's metrics on a live proxy: one device through at the pace
// (1/s), two refused after MaxWait, counted as admission_timeout, their
// waits in the histogram.
func TestAdmissionCollector(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &demo.Backend{ID: "b1"}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); b.Serve(l) }()
	defer wg.Wait()
	defer b.Close()
	r, err := ring.New(ring.ModeConsistent, []ring.Backend{{ID: "b1", Addr: l.Addr().String()}})
	if err != nil {
		t.Fatal(err)
	}
	wait := NewAdmissionWaitHistogram()
	p := &proxy.Proxy{Source: proxy.NewAtomicRing(r), OnAdmissionWait: ObserveSeconds(wait),
		Admission: proxy.Admission{LoginsPerSecond: 1, MaxWait: 200 * time.Millisecond}}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewProxyCollector(p), NewAdmissionCollector(p), wait)
	want(t, scrape(t, reg), map[string]float64{`devgate_connections_closed_total{reason="admission_timeout"}`: 0})

	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- p.Serve(pl) }()
	defer func() { p.Close(); <-served }()
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range 3 {
		c, err := net.Dial("tcp", pl.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		c.Write(login("dev-" + string(rune('a'+i))))
		if i == 0 { // through first: it takes the one token
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.ReadFull(c, make([]byte, 6)); err != nil {
				t.Fatal(err)
			}
		}
	}
	waitScrape(t, reg, "two refused", func(m map[string]float64) bool {
		return m[`devgate_connections_closed_total{reason="admission_timeout"}`] == 2
	})
	want(t, scrape(t, reg), map[string]float64{
		`devgate_admission_admitted_total{backend="b1"}`: 1,
		`devgate_admission_waiting{backend="b1"}`:        0,
		`devgate_admission_rate{backend="b1"}`:           1,
		`devgate_admission_wait_seconds_count`:           2,
	})
	lint(t, reg)
}
