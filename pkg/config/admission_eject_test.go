package config

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestGuardSet(t *testing.T) {
	c, err := Parse([]byte(oneBackend + `admission:
  eject: {failures: 5, minBackoff: 2s, maxBackoff: 1m}
  flap: {max: 4, window: 30s, delay: 2s, devices: 1000}
evictNotice: {type: 9, body: '{"reconnectAfter":{{.After}}}', afterMin: 3s, afterMax: 10s}
`))
	if err != nil {
		t.Fatal(err)
	}
	e, f, n := c.Admission.Eject, c.Admission.Flap, c.EvictNotice
	if e.Failures != 5 || time.Duration(e.MinBackoff) != 2*time.Second || time.Duration(e.MaxBackoff) != time.Minute ||
		f.Max != 4 || time.Duration(f.Window) != 30*time.Second || time.Duration(f.Delay) != 2*time.Second || f.Devices != 1000 {
		t.Fatalf("parsed %+v %+v", e, f)
	}
	if lo, hi := n.AfterRange(); n == nil || *n.Type != 9 || lo != 3*time.Second || hi != 10*time.Second {
		t.Fatalf("notice %+v", n)
	}
}

func TestGuardRefused(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"admission: {eject: {failures: -2}}", "admission.eject.failures"},
		{"admission: {eject: {minBackoff: 10s, maxBackoff: 2s}}", "maxBackoff"},
		{"admission: {flap: {max: -5}}", "admission.flap.max"},
		{"admission: {flap: {delay: 1h}}", "admission.flap"},
		{"admission: {flap: {devices: 100000000}}", "admission.flap.devices"},
		{"admission: {flap: {maxx: 3}}", "unknown field"},
		{"evictNotice: {body: x}", "evictNotice.type"},
		{"evictNotice: {type: 300, body: x}", "evictNotice.type"},
		{"evictNotice: {type: 9}", "evictNotice.body"},
		{"evictNotice: {type: 9, body: '{{.Before}}'}", "only {{.After}}"},
		{"evictNotice: {type: 9, body: x, afterMin: 10s, afterMax: 5s}", "afterMax"},
		{"frame: {maxFrameLength: 16}\nevictNotice: {type: 9, body: '0123456789abcdef'}", "evictNotice"},
	} {
		_, err := Parse([]byte(oneBackend + tc.yaml + "\n"))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", tc.yaml, err, tc.want)
		}
	}
}

// The commented admission and evictNotice blocks of the example file parse
// once uncommented, with the defaults they show.
func TestGuardExampleBlocks(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "deploy", "devgate.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc []string
	on := false
	for _, line := range strings.Split(string(b), "\n") {
		switch {
		case line == "# admission:" || line == "# evictNotice:":
			on = true
		case line == "" || !strings.HasPrefix(line, "#  ") && !strings.HasPrefix(line, "#   "):
			on = false
		}
		if on {
			doc = append(doc, strings.TrimPrefix(line, "# "))
		}
	}
	c, err := Parse([]byte(oneBackend + strings.Join(doc, "\n") + "\n"))
	if err != nil {
		t.Fatalf("%v in:\n%s", err, strings.Join(doc, "\n"))
	}
	e, f := c.Admission.Eject, c.Admission.Flap
	if e.Failures != DefaultEjectFailures || time.Duration(e.MaxBackoff) != DefaultEjectMaxBackoff ||
		f.Max != DefaultFlapMax || time.Duration(f.Delay) != DefaultFlapDelay || c.EvictNotice == nil {
		t.Fatalf("example: %+v %+v %+v", e, f, c.EvictNotice)
	}
}

func FuzzParseGuard(f *testing.F) {
	f.Add([]byte(oneBackend + "admission: {eject: {failures: 2}, flap: {max: 3, delay: 1s}}\nevictNotice: {type: 9, body: '{{.After}}'}\n"))
	f.Add([]byte(oneBackend + "frame: {lengthFieldLength: 1, maxFrameLength: 200}\nevictNotice: {type: 1, body: 'x{{.After}}y', afterMax: 99999s}\n"))
	f.Fuzz(func(t *testing.T, doc []byte) {
		c, err := Parse(doc)
		if err != nil || c.EvictNotice == nil {
			return
		}
		// A notice that validated must frame with any wait in its range.
		fc, err := c.ReplyFrameConfig()
		if err != nil {
			t.Fatal(err)
		}
		_, hi := c.EvictNotice.AfterRange()
		body := strings.ReplaceAll(c.EvictNotice.Body, "{{.After}}", strconv.FormatInt(int64(hi/time.Second), 10))
		if _, err := fc.Build(byte(*c.EvictNotice.Type), []byte(body)); err != nil {
			t.Fatalf("validated notice does not frame: %v", err)
		}
	})
}
