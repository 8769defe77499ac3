package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// testVersion is stamped into the binary the tests build.
const testVersion = "v0.0.0-clitest"

var (
	binOnce sync.Once
	binPath string
	binErr  error
	binDir  string
)

// TestMain removes the binary built for the tests.
func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// devgateBin builds the real binary once per test run.
func devgateBin(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "devgate-cli-test-")
		if binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "devgate")
		cmd := exec.Command("go", "build", "-ldflags", "-X main.version="+testVersion, "-o", binPath, ".")
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = errors.New(string(out))
		}
	})
	if binErr != nil {
		t.Fatalf("go build: %v", binErr)
	}
	return binPath
}

// runBin runs the binary to its end (at most a minute) and returns what it
// printed and its exit code.
func runBin(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errw bytes.Buffer
	cmd := exec.Command(devgateBin(t), args...)
	cmd.Stdout, cmd.Stderr = &out, &errw
	cmd.WaitDelay = time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	timer := time.AfterFunc(time.Minute, func() { cmd.Process.Kill() })
	defer timer.Stop()
	err := cmd.Wait()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatal(err)
	}
	t.Logf("devgate %s -> %d\n%s%s", strings.Join(args, " "), code, out.String(), errw.String())
	return out.String(), errw.String(), code
}

func TestBinaryHelpAndVersion(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // in stdout
	}{
		{[]string{"--help"}, "Available Commands:"},
		{[]string{"-h"}, "exit codes: 0 ok, 1 failed, 2 usage error, 130 interrupted"},
		{[]string{"help", "serve"}, "--config string"},
		{[]string{"serve", "-h"}, "--admin-advertise string"},
		{[]string{"sim", "--help"}, "--devices int"},
		{[]string{"ctl", "drain", "--help"}, "--deadline duration"},
		{[]string{"--version"}, "devgate " + testVersion + "\n"},
		{[]string{"version"}, testVersion + "\n"},
		{[]string{"completion", "bash"}, "complete -o default -F __start_devgate devgate"},
		{[]string{"completion", "zsh"}, "#compdef devgate"},
		{[]string{"completion", "fish"}, "complete -c devgate"},
	} {
		out, errOut, code := runBin(t, tc.args...)
		if code != 0 || !strings.Contains(out, tc.want) || errOut != "" {
			t.Errorf("devgate %q: exit %d, stderr %q, stdout lacks %q:\n%s", tc.args, code, errOut, tc.want, out)
		}
	}
}

// A bad command line is one error line and one hint, exit 2, nothing on stdout.
func TestBinaryUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // all of stderr
	}{
		{[]string{"sim", "--devcies", "10"}, "devgate sim: unknown flag: --devcies\nRun 'devgate sim --help' for usage.\n"},
		{[]string{"serve", "--grace", "soon"}, "devgate serve: invalid argument \"soon\" for \"--grace\" flag: time: invalid duration \"soon\"\nRun 'devgate serve --help' for usage.\n"},
		{[]string{"serve", "extra"}, "devgate serve: takes no arguments, got [\"extra\"]\nRun 'devgate serve --help' for usage.\n"},
		{[]string{"sevre"}, "devgate: unknown command \"sevre\" (did you mean serve?)\nRun 'devgate --help' for usage.\n"},
		{[]string{"config", "chekc"}, "devgate config: unknown command \"chekc\" (did you mean check?)\nRun 'devgate config --help' for usage.\n"},
		{[]string{"register", "--addr", "10.0.0.1:9000"}, "devgate register: --id and --addr are required\nRun 'devgate register --help' for usage.\n"},
	} {
		out, errOut, code := runBin(t, tc.args...)
		if code != exitUsage || out != "" || errOut != tc.want {
			t.Errorf("devgate %q: exit %d, stdout %q, stderr:\n%s\nwant exit 2 and stderr:\n%s", tc.args, code, out, errOut, tc.want)
		}
	}
}

// Go's flag package took -name for --name; those command lines still work.
func TestBinarySingleDashFlags(t *testing.T) {
	out, _, code := runBin(t, "sim", "-devices=1", "-target", "127.0.0.1:1", "-timeout", "100ms", "-json")
	if code != 0 || !strings.Contains(out, `"Devices":1,`) { // --json reports failures, exit 0
		t.Fatalf("exit %d, stdout %q; want 0 and a JSON report of 1 device", code, out)
	}
}

func TestBinaryConfigCheck(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(good, []byte("backends: [{id: b1, addr: '10.0.0.1:9000'}]\n"), 0o600)
	os.WriteFile(bad, []byte("backend: [{id: b1, addr: '10.0.0.1:9000'}]\nadmin: {httpListen: garbage}\n"), 0o600)
	example := filepath.Join("..", "..", "deploy", "devgate.example.yaml")

	out, errOut, code := runBin(t, "config", "check", good, example)
	want := good + ": OK (listen 127.0.0.1:9000, 1 static backend, admin 127.0.0.1:9090 and http://127.0.0.1:9091)\n" +
		example + ": OK (listen 127.0.0.1:9000, 3 static backends, admin 127.0.0.1:9090 and http://127.0.0.1:9091)\n"
	if code != 0 || out != want || errOut != "" {
		t.Errorf("check good: exit %d, stdout:\n%s\nstderr:\n%s\nwant exit 0, stdout:\n%s", code, out, errOut, want)
	}
	// The unknown field is reported; the bad address after it is not
	// reached, for validation needs a decoded file.
	out, errOut, code = runBin(t, "config", "check", good, bad)
	wantErr := bad + ": line 1: unknown field \"backend\" (did you mean \"backends\"?)\n"
	if code != exitFailed || out != good+": OK (listen 127.0.0.1:9000, 1 static backend, admin 127.0.0.1:9090 and http://127.0.0.1:9091)\n" || errOut != wantErr {
		t.Errorf("check bad: exit %d, stdout:\n%s\nstderr:\n%s\nwant exit 1, stderr:\n%s", code, out, errOut, wantErr)
	}
	os.WriteFile(bad, []byte("backends: [{id: b1, addr: '10.0.0.1:9000'}]\nadmin: {httpListen: garbage}\n"), 0o600)
	_, errOut, code = runBin(t, "config", "check", bad)
	if wantErr = bad + ": admin.httpListen: \"garbage\": missing port\n"; code != exitFailed || errOut != wantErr {
		t.Errorf("check bad address: exit %d, stderr:\n%s\nwant exit 1, stderr:\n%s", code, errOut, wantErr)
	}
	// Files the config names must open.
	os.WriteFile(bad, []byte("backends: [{id: b1, addr: '10.0.0.1:9000'}]\nadmin: {tokens: [{file: /nonexistent/token, role: admin}]}\n"), 0o600)
	_, errOut, code = runBin(t, "config", "check", bad)
	if wantErr = bad + ": admin.tokens[0].file: open /nonexistent/token: no such file or directory\n"; code != exitFailed || errOut != wantErr {
		t.Errorf("check missing token file: exit %d, stderr:\n%s\nwant exit 1, stderr:\n%s", code, errOut, wantErr)
	}
	if _, errOut, code = runBin(t, "config", "check"); code != exitUsage || !strings.Contains(errOut, "want FILE...") {
		t.Errorf("check without a file: exit %d, stderr %q", code, errOut)
	}
}

// serve without --config and without devgate.yaml says how to pass one.
func TestBinaryServeWithoutConfig(t *testing.T) {
	bin := devgateBin(t)
	cmd := exec.Command(bin, "serve")
	cmd.Dir = t.TempDir()
	out, err := cmd.CombinedOutput()
	want := "devgate serve: no devgate.yaml in the current directory: pass --config FILE (deploy/devgate.example.yaml shows every field)\n"
	if ee := (*exec.ExitError)(nil); !errors.As(err, &ee) || ee.ExitCode() != exitFailed || string(out) != want {
		t.Fatalf("err %v, output %q; want exit 1 and %q", err, out, want)
	}
}

// The commands dev prints run as printed: ./bin/devgate unless PATH finds
// this very binary as devgate.
func TestSelfName(t *testing.T) {
	bin := devgateBin(t)
	t.Setenv("PATH", "/nonexistent")
	if got := selfName(bin); got != bin {
		t.Errorf("not on PATH: %q, want %q", got, bin)
	}
	t.Setenv("PATH", filepath.Dir(bin))
	if got := selfName(bin); got != "devgate" {
		t.Errorf("on PATH: %q, want devgate", got)
	}
	other := filepath.Join(t.TempDir(), "devgate")
	if err := os.WriteFile(other, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", filepath.Dir(other))
	if got := selfName(bin); got != bin {
		t.Errorf("another devgate on PATH: %q, want %q", got, bin)
	}
}

func TestLongDashes(t *testing.T) {
	got := longDashes(newRootCmd(), []string{"ctl", "-addr", "a:1", "drain", "b1", "-reason", "-maintenance", "-wait", "-pace=5", "-h", "--", "-json"})
	want := "ctl --addr a:1 drain b1 --reason -maintenance --wait --pace=5 -h -- -json"
	if strings.Join(got, " ") != want {
		t.Fatalf("got  %s\nwant %s", strings.Join(got, " "), want)
	}
}
