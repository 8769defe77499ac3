// Package testkit holds helpers the tests of several packages share:
// frames of the default protocol (DESIGN.md: a 6-byte header, type,
// version, a 16-bit tag and a 16-bit body length) and bounded polling.
package testkit

import (
	"encoding/binary"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Frame builds a frame of the default 6-byte header format (version 1,
// tag 0).
func Frame(typ byte, body string) []byte {
	b := make([]byte, 6, 6+len(body))
	b[0], b[1] = typ, 1
	binary.BigEndian.PutUint16(b[4:], uint16(len(body)))
	return append(b, body...)
}

// ReadFrame reads one frame of the default format.
func ReadFrame(r io.Reader) (typ byte, body []byte, err error) {
	var h [6]byte
	if _, err = io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	body = make([]byte, binary.BigEndian.Uint16(h[4:]))
	_, err = io.ReadFull(r, body)
	return h[0], body, err
}

// WaitFor polls cond every poll until it holds, and fails t with what
// when it does not within d.
func WaitFor(t testing.TB, d, poll time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(poll)
	}
}

// Scrape GETs a Prometheus text endpoint and returns its samples by
// `name{labels}` as written.
func Scrape(t testing.TB, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		i := strings.LastIndexByte(line, ' ')
		if i <= 0 || line[0] == '#' {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("bad sample %q", line)
		}
		out[line[:i]] = v
	}
	return out
}
