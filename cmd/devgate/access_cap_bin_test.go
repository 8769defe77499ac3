package main

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// log.accessErrorsPerSecond through the binary: a burst of bad first
// frames leaves at most the cap's lines a second, and the rest shows in
// devgate_access_lines_suppressed_total.
func TestBinaryAccessErrorCap(t *testing.T) {
	bin := devgateBin(t)
	dir := t.TempDir()
	listen, admin := freePort(t), freePort(t)
	cfg := writeFile(t, dir, "devgate.yaml", fmt.Sprintf(`listen: %s
backends: [{id: a, addr: '127.0.0.1:1'}]
admin: {listen: "off", httpListen: %s}
log: {access: errors, accessErrorsPerSecond: 2}
`, listen, admin))
	gw := startServe(t, dir, bin, "serve", "--config", cfg)
	waitLog(t, gw, "devgate serving")
	const n = 25
	bad := make([]byte, 6, 14)
	bad[0] = 1
	binary.BigEndian.PutUint16(bad[4:], 8)
	bad = append(bad, "not json"...)
	for range n {
		c, err := net.Dial("tcp", listen)
		if err != nil {
			t.Fatal(err)
		}
		c.Write(bad)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		c.Read(make([]byte, 1))
		c.Close()
	}
	suppressed := regexp.MustCompile(`devgate_access_lines_suppressed_total\{reason="not_json"\} (\d+)`)
	var sup, lines int
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, body := get(admin, "/metrics")
		if m := suppressed.FindStringSubmatch(body); m != nil {
			sup, _ = strconv.Atoi(m[1])
		}
		lines = 0
		all, _ := os.ReadFile(gw.logPath) // the whole log: log() keeps only its end
		for _, l := range strings.Split(string(all), "\n") {
			if strings.Contains(l, `"logger":"access"`) && strings.Contains(l, `"reason":"not_json"`) {
				lines++
			}
		}
		if sup+lines >= n || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if sup == 0 || sup+lines != n {
		t.Fatalf("%d access lines and %d suppressed for %d refusals\n%s", lines, sup, n, gw.log())
	}
	if err := gw.stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
}
