// Package check validates the Grafana dashboard and the alert rules in
// deploy/k8s/monitoring: every rule with Prometheus' own rule parser, every
// query with its PromQL parser, and every metric they name against the
// /metrics of a real devgate (`devgate dev` holding devices, a backend
// draining, so the labelled series exist).
package check

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"sigs.k8s.io/yaml"
)

const (
	rulesFile     = "../prometheusrule.yaml"
	dashboardFile = "../grafana-dashboard.json"
	repoRoot      = "../../../.."
)

var promql = parser.NewParser(parser.Options{})

// metricNames returns the metric names an expression selects.
func metricNames(t *testing.T, expr string) ([]string, error) {
	t.Helper()
	e, err := promql.ParseExpr(expr)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, sel := range parser.ExtractSelectors(e) {
		name := ""
		for _, m := range sel {
			if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
				name = m.Value
			}
		}
		if name == "" {
			return nil, fmt.Errorf("%q: a selector without a metric name", expr)
		}
		out = append(out, name)
	}
	return out, nil
}

// ruleNames parses the PrometheusRule's groups with rulefmt and returns
// the metric names of its rules, by alert.
func ruleNames(t *testing.T) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var pr struct {
		Kind string          `json:"kind"`
		Spec json.RawMessage `json:"spec"`
	}
	if err := yaml.Unmarshal(b, &pr); err != nil || pr.Kind != "PrometheusRule" {
		t.Fatalf("%s: kind %q, %v", rulesFile, pr.Kind, err)
	}
	spec, err := yaml.JSONToYAML(pr.Spec)
	if err != nil {
		t.Fatal(err)
	}
	groups, errs := rulefmt.Parse(spec, false, model.UTF8Validation, promql, slog.New(slog.DiscardHandler))
	for _, err := range errs {
		t.Errorf("%s: %v", rulesFile, err)
	}
	if len(errs) > 0 {
		t.FailNow()
	}
	out := map[string][]string{}
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" || r.Labels["severity"] == "" || r.Annotations["summary"] == "" || r.For == 0 {
				t.Errorf("rule %q: want an alert with a severity, a summary and a for", r.Alert+r.Record)
			}
			names, err := metricNames(t, r.Expr)
			if err != nil {
				t.Errorf("%s: %v", r.Alert, err)
			}
			out[r.Alert] = names
		}
	}
	return out
}

// grafanaVars are the dashboard's variables, replaced before parsing.
var grafanaVars = strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$namespace", "default")

// dashboardNames returns the metric names of the dashboard's queries, by panel.
func dashboardNames(t *testing.T) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		UID    string `json:"uid"`
		Title  string `json:"title"`
		Panels []struct {
			Type    string `json:"type"`
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &d); err != nil || d.UID == "" || d.Title == "" {
		t.Fatalf("%s: uid %q title %q: %v", dashboardFile, d.UID, d.Title, err)
	}
	out := map[string][]string{}
	queries := 0
	for _, p := range d.Panels {
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q: no query", p.Title)
		}
		for _, tg := range p.Targets {
			names, err := metricNames(t, grafanaVars.Replace(tg.Expr))
			if err != nil {
				t.Errorf("panel %q: %v", p.Title, err)
			}
			out[p.Title] = append(out[p.Title], names...)
			queries++
		}
	}
	labelValues := regexp.MustCompile(`^label_values\((\w+),\s*\w+\)$`)
	for _, v := range d.Templating.List {
		if m := labelValues.FindStringSubmatch(v.Definition); m != nil {
			out["variable "+v.Definition] = []string{m[1]}
		} else if v.Definition != "" {
			t.Errorf("variable query %q not understood", v.Definition)
		}
	}
	if queries < 10 {
		t.Errorf("%d queries: the dashboard lost its panels?", queries)
	}
	return out
}

func TestRulesAndDashboardParse(t *testing.T) {
	alerts := ruleNames(t)
	for _, want := range []string{"DevgateEtcdDisconnected", "DevgateRingStale", "DevgateFleetSplitRevisions", "DevgatePanicHold",
		"DevgateDrainStuck", "DevgateRejectsRising", "DevgateFileDescriptorsNearLimit"} {
		if _, ok := alerts[want]; !ok {
			t.Errorf("no alert %s", want)
		}
	}
	dashboardNames(t)
}

// A broken rule is caught: the check is not vacuous.
func TestBrokenRuleFails(t *testing.T) {
	for _, bad := range []string{
		"groups:\n- name: g\n  rules:\n  - alert: A\n    expr: rate(devgate_x[5m]\n",                            // unbalanced
		"groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up\n    fro: 1m\n",                               // misspelt field
		"groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up\n    labels:\n      severity: '{{ $labels'\n", // template
	} {
		if _, errs := rulefmt.Parse([]byte(bad), false, model.UTF8Validation, promql, slog.New(slog.DiscardHandler)); len(errs) == 0 {
			t.Errorf("no error for %q", bad)
		}
	}
}

// Every metric the rules and the dashboard name is one a real devgate
// exports.
func TestMetricNamesExist(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs devgate")
	}
	used := map[string][]string{} // metric -> where
	for what, m := range map[string]map[string][]string{"alert": ruleNames(t), "panel": dashboardNames(t)} {
		for where, names := range m {
			for _, n := range names {
				used[n] = append(used[n], what+" "+where)
			}
		}
	}
	exported := scrapeDevgate(t)
	var missing []string
	for n, where := range used {
		if !exported[n] {
			missing = append(missing, fmt.Sprintf("%s (in %s)", n, strings.Join(where, ", ")))
		}
	}
	sort.Strings(missing)
	for _, m := range missing {
		t.Errorf("not exported by devgate: %s", m)
	}
	t.Logf("%d metric names used, %d missing from the %d exported", len(used), len(missing), len(exported))
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// start runs bin with args, killed by PID at cleanup; its stdout lines go to lines.
func start(t *testing.T, bin string, lines chan<- string, args ...string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default: // nobody waits: drop
			}
		}
	}()
	t.Cleanup(func() {
		syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
		wg.Wait()
		cmd.Wait()
	})
}

// scrapeDevgate builds devgate, runs `devgate dev` with devices held by
// `devgate sim` and a backend draining, and returns the metric names of
// its /metrics.
func scrapeDevgate(t *testing.T) map[string]bool {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "devgate")
	build := exec.Command("go", "build", "-o", bin, "./cmd/devgate")
	build.Dir = repoRoot
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	devLines := make(chan string, 64)
	admin := freeAddr(t)
	start(t, bin, devLines, "dev", "--listen", "127.0.0.1:0", "--etcd-listen", freeAddr(t),
		"--admin-listen", freeAddr(t), "--admin-http-listen", admin, "--log-level", "error")
	gw := ""
	for deadline := time.After(30 * time.Second); gw == ""; {
		select {
		case l := <-devLines:
			if f := strings.Fields(l); len(f) > 1 && f[0] == "gateway" {
				gw = f[1]
			}
		case <-deadline:
			t.Fatal("devgate dev did not print its gateway address in 30 s")
		}
	}
	start(t, bin, make(chan string), "sim", "--target", gw, "--devices", "20", "--hold", "0")
	// A drain with a deadline an hour away: the deadline gauge is there
	// and the devices stay. dev's admin API is open on loopback.
	var names map[string]bool
	drained := false
	for i := 0; ; i++ {
		if !drained {
			req, _ := http.NewRequest("POST", "http://"+admin+"/api/v1/DrainBackend", strings.NewReader(`{"id":"demo-1","deadline":"3600s"}`))
			req.Header.Set("Content-Type", "application/json")
			if resp, err := http.DefaultClient.Do(req); err == nil {
				drained = resp.StatusCode == http.StatusOK
				resp.Body.Close()
			}
		}
		names = scrape(t, "http://"+admin+"/metrics")
		if drained && names["devgate_backend_connections"] && names["devgate_drain_deadline_timestamp_seconds"] {
			return names
		}
		if i == 300 {
			t.Fatalf("after 30 s: drained %v, names %v", drained, names)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// scrape returns the metric names in a text-format exposition: the
// families (# TYPE) and the sample names (such as x_bucket).
func scrape(t *testing.T, url string) map[string]bool {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	names := map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if f := strings.Fields(l); len(f) >= 3 && f[0] == "#" && f[1] == "TYPE" {
			names[f[2]] = true
		} else if l != "" && l[0] != '#' {
			names[strings.FieldsFunc(l, func(r rune) bool { return r == '{' || r == ' ' })[0]] = true
		}
	}
	return names
}
