package main

import (
	"bufio"
	"encoding/json"
	"net"
	"os/exec"
	"testing"
	"time"

	"github.com/devgate/devgate/pkg/demo"
	"github.com/devgate/devgate/pkg/loadgen"
)

// `devgate load --mode storm` through the built binary: the first line once
// the devices are held, the second once a backend restart dropped them all
// and they logged in again; EOF on stdin ends it.
func TestLoadStormThroughBinary(t *testing.T) {
	bin := devgateBin(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	b1 := &demo.Backend{ID: "b1"}
	go b1.Serve(l)
	defer b1.Close()

	const n = 30
	cmd := exec.Command(bin, "load", "--mode", "storm", "--target", addr, "--devices", "30",
		"--concurrency", "8", "--timeout", "5s", "--storm-wait", "20s", "--until-eof")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var waitErr error
	exited := make(chan struct{})
	go func() { waitErr = cmd.Wait(); close(exited) }()
	defer func() {
		select {
		case <-exited:
		default:
			cmd.Process.Kill()
			<-exited
		}
	}()
	lines := make(chan []byte, 2)
	go func() {
		br := bufio.NewReader(stdout)
		for {
			line, err := br.ReadBytes('\n')
			if err != nil {
				close(lines)
				return
			}
			lines <- line
		}
	}()
	next := func(v any) {
		t.Helper()
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatal("load ended early")
			}
			if err := json.Unmarshal(line, v); err != nil {
				t.Fatalf("%v: %s", err, line)
			}
		case <-time.After(60 * time.Second):
			t.Fatal("no line from load")
		}
	}
	var held loadgen.Result
	next(&held)
	if held.Mode != "storm" || held.Ok != n {
		t.Fatalf("held: %+v", held)
	}

	b1.Close() // the restart: every device dropped, the port served again
	var l2 net.Listener
	for range 100 {
		if l2, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	b2 := &demo.Backend{ID: "b2"}
	go b2.Serve(l2)
	defer b2.Close()

	var st loadgen.StormResult
	next(&st)
	if st.Held != n || st.Dropped != n || st.Back != n || st.LastBackNs < st.FirstDropNs {
		t.Fatalf("storm: %+v", st)
	}
	if got := b2.Stats().Logins; got != n {
		t.Errorf("restarted backend took %d logins, want %d", got, n)
	}
	stdin.Close()
	select {
	case <-exited:
		if waitErr != nil {
			t.Errorf("load after EOF: %v", waitErr)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("load did not end on EOF")
	}
}
