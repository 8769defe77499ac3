package loadgen

import (
	"net"
	"slices"
	"time"
)

// Result is one run's figures, printed as one JSON line. Latencies are in
// microseconds; fields a mode does not measure are left out.
type Result struct {
	Mode        string   `json:"mode"`
	Targets     []string `json:"targets"`
	Concurrency int      `json:"concurrency"`
	Devices     int      `json:"devices,omitempty"`     // Hold: asked for
	Ok          int      `json:"ok"`                    // connections (Hold, Churn) or exchanges that succeeded
	Failed      int      `json:"failed"`                // and those that did not
	Errors      []string `json:"errors,omitempty"`      // first few distinct errors
	Seconds     float64  `json:"seconds"`               // measured wall time
	ConnsPerSec float64  `json:"conns_per_s,omitempty"` // Churn
	OpsPerSec   float64  `json:"ops_per_s,omitempty"`   // Pingpong exchanges
	P50us       float64  `json:"p50_us,omitempty"`      // Churn setup, Pingpong RTT
	P99us       float64  `json:"p99_us,omitempty"`
	P999us      float64  `json:"p999_us,omitempty"`
	MBPerSec    float64  `json:"mb_per_s,omitempty"` // Bulk: bytes sent + received, 1e6/s
	TxBytes     int64    `json:"tx_bytes,omitempty"`
	RxBytes     int64    `json:"rx_bytes,omitempty"`

	held  []net.Conn
	storm *storm // Storm: the watched devices
}

// Release closes the connections a Hold or Storm run keeps open.
func (r *Result) Release() {
	for _, c := range r.held {
		c.Close()
	}
	r.held = nil
	if r.storm != nil {
		r.storm.release()
		r.storm = nil
	}
}

// errSet keeps the first few distinct error texts.
type errSet []string

func (e *errSet) add(err error) {
	if len(*e) >= 5 {
		return
	}
	s := err.Error()
	if !slices.Contains(*e, s) {
		*e = append(*e, s)
	}
}

// setPercentiles fills P50/P99/P999 from samples, which it sorts.
func (r *Result) setPercentiles(samples []time.Duration) {
	if len(samples) == 0 {
		return
	}
	slices.Sort(samples)
	at := func(q float64) float64 {
		i := int(q * float64(len(samples)))
		i = min(i, len(samples)-1)
		return float64(samples[i].Nanoseconds()) / 1e3
	}
	r.P50us, r.P99us, r.P999us = at(0.50), at(0.99), at(0.999)
}
