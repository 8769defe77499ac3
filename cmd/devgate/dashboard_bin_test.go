package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/devgate/devgate/internal/testenv"
)

// screenshotEnv, set to a path, makes TestDashboardBrowser write its
// screenshot there (make screenshot: docs/dashboard.png).
const screenshotEnv = "DEVGATE_SCREENSHOT"

// chromiumPath finds Debian's chromium (apt-get install chromium).
func chromiumPath(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	testenv.Missing(t, "chromium not found: apt-get install chromium to run the dashboard's browser test")
	return ""
}

// TestDashboardBrowser drives /ui/ of the real binary in headless
// chromium: `devgate dev` with a token and login pacing, `devgate sim`
// holding devices; the page takes the token, shows the three demo backends
// with their connections and pacing, finds a device the simulator holds,
// drains a backend with its button until the drain's progress bar reaches
// zero, then undrains it and shows the automatic rebalance that follows.
func TestDashboardBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("starts chromium and the binary")
	}
	chrome := chromiumPath(t)
	bin := devgateBin(t)
	tokFile := filepath.Join(t.TempDir(), "admin.token")
	const token = "dashboard-test-token-0123456789"
	if err := os.WriteFile(tokFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	adminHTTP := freePort(t)
	dev := startBin(t, bin, false, "dev", "--listen", "127.0.0.1:0", "--etcd-listen", freePort(t),
		"--admin-listen", freePort(t), "--admin-http-listen", adminHTTP, "--admin-token-file", tokFile, "--log-level", "warn",
		"--logins-per-second", "1000")
	line, _ := dev.await(t, "the gateway address", 0, func(l string) bool { return strings.HasPrefix(strings.TrimSpace(l), "gateway ") })
	gw := strings.Fields(line)[1]
	const devices = 60
	simp := startBin(t, bin, false, "sim", "--target", gw, "--devices", strconv.Itoa(devices), "--hold", "0", "--every", "200ms")
	all := fmt.Sprintf("connected %d/%d |", devices, devices)
	simp.await(t, "every device connected", 0, func(l string) bool { return strings.Contains(l, all) && len(lineCounts(l)) == 3 })

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chrome),
		chromedp.NoSandbox, chromedp.DisableGPU, chromedp.WindowSize(1280, 1500),
		chromedp.UserDataDir(t.TempDir()))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancelTab := chromedp.NewContext(actx)
	defer cancelTab()
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second) // the bound of every browser step
	defer cancel()

	fail := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v\ndev output:\n%s", what, err, dev.output())
		}
	}
	run := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		fail(what, chromedp.Do(ctx, actions...))
	}
	// eval polls a JS expression (at most 60 s) until it is true.
	eval := func(what, expr string) {
		t.Helper()
		_, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(60*time.Second), chromedp.WithPollingInterval(100*time.Millisecond)))
		fail(what, err)
	}
	click := func(what, elem string) { // elem: a JS expression of an element
		t.Helper()
		_, err := chromedp.Run(ctx, chromedp.Evaluate[bool]("("+elem+".click(), true)"))
		fail(what, err)
	}

	run("open /ui/ and give the token",
		chromedp.Navigate("http://"+adminHTTP+"/ui/"),
		chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), token),
		chromedp.Click(chromedp.ID("login-button")),
		chromedp.WaitVisible(chromedp.ID("main")))
	eval("the admin role shown", `document.body.classList.contains("admin") && document.getElementById("whoami").textContent.includes("(admin)")`)

	// The three demo backends with their connections, adding up to the devices held.
	eval("three backends holding every device", fmt.Sprintf(`(() => {
		const rows = [...document.querySelectorAll("#backends tbody tr")];
		const n = rows.map(r => Number(r.querySelector("td.conns").textContent));
		return rows.length === 3 && rows.every(r => /^demo-[123]$/.test(r.dataset.backend)) &&
			n.every(x => x > 0) && n.reduce((a, b) => a + b, 0) === %d;
	})()`, devices))
	eval("each backend's login pacing: a rate, none waiting", `[...document.querySelectorAll("#backends tbody tr td.pacing")].map(c => c.textContent).every(s => {
		const m = /^(\d+\.\d)\/s · (\d+) waiting$/.exec(s);
		return m !== null && Number(m[1]) > 0 && m[2] === "0";
	}) && document.querySelectorAll("#backends tbody tr td.pacing").length === 3`)
	counts, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]int](`Object.fromEntries([...document.querySelectorAll("#backends tbody tr")].map(r => [r.dataset.backend, Number(r.querySelector("td.conns").textContent)]))`))
	fail("read the counts", err)
	eval("the fleet view: one ready replica on one ring revision", `document.querySelectorAll("#fleet tbody tr").length === 1 &&
		document.getElementById("consistent").classList.contains("ok")`)

	// Find a device the simulator holds: where it is connected now.
	const devid = "dev-000007"
	run("find "+devid,
		chromedp.SendKeys(chromedp.ID("devid"), devid),
		chromedp.Click(chromedp.ID("find")))
	eval("the device found on a demo backend", `(() => {
		const t = document.getElementById("device-result").textContent;
		return t.includes("find `+devid+`") && /demo-[123]/.test(t) && !t.includes("Unimplemented");
	})()`)
	found, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID("device-result")))
	fail("read the find result", err)

	// Drain the busiest backend with its button (two clicks: confirm).
	target, most := "", 0
	for id, n := range counts {
		if n > most {
			target, most = id, n
		}
	}
	button := fmt.Sprintf(`document.querySelector('#backends button[data-action="drain"][data-backend="%s"]')`, target)
	run("set the drain's deadline to now", chromedp.SetValue(chromedp.ID("drain-deadline"), "0"))
	eval("drain button shown", button+` !== null`)
	click("click drain", button)
	eval("drain asks to confirm", button+`.classList.contains("confirm")`)
	click("confirm drain", button)
	bar := fmt.Sprintf(`document.querySelector('#progress [data-progress="drain-%s"]')`, target)
	eval("the drain's progress bar", bar+` !== null`)
	eval("the progress bar at zero", fmt.Sprintf(`(() => { const b = %s; return b !== null && b.dataset.left === "0" && b.querySelector("progress").value === 0 &&
		document.querySelector('#backends tr[data-backend="%s"] td.conns').textContent === "0"; })()`, bar, target))
	// The devices went to the other backends: the page's counts add up again.
	eval("the devices on the other backends", fmt.Sprintf(`[...document.querySelectorAll("#backends tbody tr")].map(r => Number(r.querySelector("td.conns").textContent)).reduce((a, b) => a + b, 0) === %d`, devices))
	// Undrained, the backend owns its devices again: dev's automatic
	// rebalance moves them back, and its bar comes from the replica's
	// status (not from this page, which did not start it).
	undrain := fmt.Sprintf(`document.querySelector('#backends button[data-action="undrain"][data-backend="%s"]')`, target)
	eval("undrain button shown", undrain+` !== null`)
	click("click undrain", undrain)
	eval("undrain asks to confirm", undrain+`.classList.contains("confirm")`)
	click("confirm undrain", undrain)
	eval("the automatic rebalance's bar, done", `(() => {
		const b = document.querySelector('#progress [data-progress^="rebalance-"]');
		if (b === null) return false;
		const p = b.querySelector("progress");
		return b.dataset.done === "1" && p.value > 0 && b.textContent.includes("(automatic)");
	})()`)
	eval("the undrained backend holds devices again, paced", fmt.Sprintf(`(() => { const r = document.querySelector('#backends tr[data-backend="%s"]');
		return Number(r.querySelector("td.conns").textContent) > 0 && /^\d+\.\d\/s · \d+ waiting$/.test(r.querySelector("td.pacing").textContent); })()`, target))
	// The replica samples every 10 s: two samples draw lines in the chart.
	eval("the history chart has samples", `Number(document.getElementById("chart-conns").dataset.samples) >= 2 &&
		/demo-[123]/.test(document.getElementById("legend").textContent)`)

	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	fail("screenshot", err)
	out := os.Getenv(screenshotEnv)
	if out == "" {
		out = filepath.Join(t.TempDir(), "dashboard.png")
	}
	if err := os.WriteFile(out, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("drained %s (%d connections); found %s; screenshot %s (%d bytes)", target, most, strings.Join(strings.Fields(found), " "), out, len(png))
	cancel()
	cancelTab()
	cancelAlloc()
	if err := dev.stop(t); err != nil {
		t.Fatalf("dev exit: %v\n%s", err, dev.output())
	}
}
