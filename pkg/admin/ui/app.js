// devgate dashboard: calls the JSON API on this port (POST /api/v1/<Method>,
// protojson of the admin API's messages) with the token kept in
// sessionStorage. Plain JS, no dependencies; every value is put in the page
// as text, never as HTML.
"use strict";

const TOKEN_KEY = "devgate.token";
const POLL_MS = 2000;
const HISTORY_MS = 5000;
const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

const $ = (id) => document.getElementById(id);
let role = "none";
let pollTimer = null;
let historyTimer = null;
const drainStart = {}; // backend id -> connections when the page first saw it draining

class APIError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

function headers() {
  const h = { "Content-Type": "application/json" };
  if (token()) h["Authorization"] = "Bearer " + token();
  return h;
}

async function call(method, req) {
  const r = await fetch("/api/v1/" + method, { method: "POST", headers: headers(), body: JSON.stringify(req || {}) });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new APIError(r.status, body.code || String(r.status), body.message || r.statusText);
  return body;
}

// stream reads a newline-delimited JSON reply, calling onMsg per message.
async function stream(method, req, onMsg) {
  const r = await fetch("/api/v1/" + method, { method: "POST", headers: headers(), body: JSON.stringify(req || {}) });
  if (!r.ok) {
    const body = await r.json().catch(() => ({}));
    throw new APIError(r.status, body.code || String(r.status), body.message || r.statusText);
  }
  const reader = r.body.getReader();
  const dec = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, i).trim();
      buf = buf.slice(i + 1);
      if (!line) continue;
      const m = JSON.parse(line);
      if (m.error) throw new APIError(0, m.error.code, m.error.message);
      onMsg(m);
    }
  }
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const c of cells) tr.appendChild(c instanceof Node ? c : el("td", c));
  return tr;
}

function num(v) { return Number(v || 0); }

function showError(where, err) { $(where).textContent = err.code ? err.code + ": " + err.message : String(err); }

// ---- login

async function start() {
  try {
    const who = await call("Whoami");
    role = who.role;
    $("whoami").textContent = who.principal + " (" + who.role + ")";
    document.body.classList.toggle("admin", role === "admin");
    $("login").hidden = true;
    $("main").hidden = false;
    $("logout").hidden = !token();
    poll();
    history();
  } catch (err) {
    $("main").hidden = true;
    $("login").hidden = false;
    if (err.status === 401 || err.status === 403) {
      $("login-error").textContent = token() ? "token refused: " + err.message : "";
      sessionStorage.removeItem(TOKEN_KEY);
    } else {
      showError("login-error", err);
    }
  }
}

$("login-form").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
  $("token").value = "";
  start();
});

$("logout").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  clearTimeout(pollTimer);
  clearTimeout(historyTimer);
  location.reload();
});

// ---- fleet, backends, progress

async function poll() {
  clearTimeout(pollTimer);
  try {
    const [gws, bes] = await Promise.all([call("ListGateways"), call("ListBackends")]);
    renderFleet(gws);
    renderBackends(bes);
    renderProgress(bes, gws);
    $("status").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (err) {
    $("status").textContent = "update failed: " + (err.code || "") + " " + err.message;
    if (err.status === 401) { start(); return; }
  }
  pollTimer = setTimeout(poll, POLL_MS);
}

function renderFleet(r) {
  const tb = $("fleet").querySelector("tbody");
  tb.replaceChildren();
  for (const g of r.gateways || []) {
    const ready = el("td", g.ready ? (g.draining ? "draining" : "ready") : "not ready", g.ready && !g.draining ? "" : "error");
    const etcd = el("td", g.etcdConnected ? "connected, " + fmtDur(g.etcdStaleness) + " stale" : "disconnected", g.etcdConnected ? "" : "error");
    const tr = row([g.id, g.admin, g.version, g.ringRevision, g.ringSize, ready, etcd, el("td", num(g.connections), "num"), fmtDur(g.uptime)]);
    tr.dataset.gateway = g.id;
    tb.appendChild(tr);
  }
  const c = $("consistent");
  c.textContent = r.consistent ? "consistent: every replica on one ring revision" : "split across ring revisions";
  c.className = "badge " + (r.consistent ? "ok" : "bad");
  const errs = Object.entries((r.partial && r.partial.errors) || {});
  $("fleet-partial").textContent = errs.length ? "no answer from: " + errs.map(([k, v]) => k + " (" + v + ")").join(", ") : "";
}

function renderBackends(r) {
  $("revision").textContent = "ring revision " + r.revision;
  const tb = $("backends").querySelector("tbody");
  tb.replaceChildren();
  for (const b of r.backends || []) {
    const state = (b.state || "").replace("BACKEND_STATE_", "").toLowerCase();
    const ejected = Object.entries(b.ejectionsByGateway || {}).filter(([, e]) => e.ejected).map(([g]) => g).join(", ");
    const actions = el("td", null, "admin-only");
    if (b.state === "BACKEND_STATE_DRAINING") {
      actions.appendChild(actionButton("undrain", b.id, () => call("UndrainBackend", { id: b.id })));
    } else {
      actions.appendChild(actionButton("drain", b.id, () => {
        const secs = num($("drain-deadline").value);
        return call("DrainBackend", { id: b.id, deadline: secs + "s", evictPerSecond: num($("drain-rate").value), reason: "dashboard" });
      }));
    }
    const a = b.admission;
    const pacing = a ? num(a.rate).toFixed(1) + "/s · " + num(a.waiting) + " waiting" : "–";
    const tr = row([b.id, b.addr, b.zone, el("td", state, "state-" + b.state), el("td", b.weight, "num"),
      el("td", (100 * num(b.ringShare)).toFixed(1) + " %", "num"), el("td", num(b.connections), "num conns"),
      el("td", pacing, "pacing"), ejected, actions]);
    tr.dataset.backend = b.id;
    tb.appendChild(tr);
  }
}

// actionButton asks for a second click within 5 s before acting; the
// pending confirmation outlives the table's redraw every POLL_MS.
const pending = {}; // label + " " + id -> time the confirmation expires
function actionButton(label, id, act) {
  const key = label + " " + id;
  const btn = el("button", label);
  btn.dataset.action = label;
  btn.dataset.backend = id;
  if ((pending[key] || 0) > Date.now()) {
    btn.classList.add("confirm");
    btn.textContent = key + "?";
  }
  btn.addEventListener("click", async () => {
    if ((pending[key] || 0) <= Date.now()) {
      pending[key] = Date.now() + 5000;
      btn.classList.add("confirm");
      btn.textContent = key + "?";
      return;
    }
    delete pending[key];
    btn.disabled = true;
    try {
      const r = await act();
      const unconf = Object.keys(r.unconfirmed || {});
      $("action-result").textContent = key + ": done" + (unconf.length ? "; not confirmed by " + unconf.join(", ") : "");
    } catch (err) {
      showError("action-result", err);
    }
    poll();
  });
  return btn;
}

function bar(key, label, value, max, detail) {
  const d = el("div", null, "bar");
  d.dataset.progress = key;
  d.appendChild(el("span", label, "label"));
  const p = document.createElement("progress");
  p.max = Math.max(max, 1);
  p.value = value;
  d.appendChild(p);
  d.appendChild(el("span", detail, "muted detail"));
  return d;
}

function renderProgress(r, gws) {
  const box = $("progress");
  box.replaceChildren();
  for (const b of r.backends || []) {
    if (b.state !== "BACKEND_STATE_DRAINING") { delete drainStart[b.id]; continue; }
    const left = num(b.connections);
    const p = b.drainProgress || {};
    // The bar's full length: the most connections seen draining, or those
    // left plus those relocated since the deadline.
    drainStart[b.id] = Math.max(drainStart[b.id] || 0, left, left + num(p.moved) + num(p.evicted) + num(p.gone));
    const dl = b.drain && b.drain.deadline ? " deadline " + new Date(b.drain.deadline).toLocaleTimeString() : "";
    const e = bar("drain-" + b.id, "drain " + b.id, left, drainStart[b.id],
      left + " connections left of " + drainStart[b.id] + "; moved " + num(p.moved) + ", evicted " + num(p.evicted) + ", gone " + num(p.gone) + dl);
    e.dataset.left = left;
    e.dataset.backend = b.id;
    box.appendChild(e);
  }
  // Each replica reports its latest relocation of misplaced connections,
  // whoever started it (this page, ctl rebalance, or rebalance.auto).
  for (const g of gws.gateways || []) {
    const p = g.rebalance;
    if (!p) continue;
    const done = num(p.moved) + num(p.evicted) + num(p.gone);
    const e = bar("rebalance-" + g.id, "rebalance on " + g.id + (p.automatic ? " (automatic)" : "") + (p.done ? " (done)" : ""),
      done, num(p.misplaced), done + " of " + num(p.misplaced) + " misplaced relocated; moved " + num(p.moved) +
      ", evicted " + num(p.evicted) + ", gone " + num(p.gone));
    e.dataset.gateway = g.id;
    e.dataset.done = p.done ? "1" : "0";
    box.appendChild(e);
  }
  if (!box.children.length) box.appendChild(el("p", "none", "muted"));
}

// The bars come from the replicas' status (renderProgress); the stream
// says when the whole rebalance is over, or why it failed.
$("rebalance").addEventListener("click", async () => {
  $("action-result").textContent = "rebalance: running";
  try {
    let last = null;
    await stream("Rebalance", {}, (m) => { last = m; });
    $("action-result").textContent = "rebalance: done" + (last ? ", " + num(last.misplaced) + " misplaced" : "");
  } catch (err) {
    showError("action-result", err);
  }
  poll();
});

// ---- device lookup, find, kick

function renderValue(v) {
  if (Array.isArray(v) && v.length && typeof v[0] === "object") {
    const keys = [...new Set(v.flatMap((o) => Object.keys(o)))];
    const t = el("table");
    t.appendChild(row(keys.map((k) => el("th", k))));
    for (const o of v) t.appendChild(row(keys.map((k) => el("td", typeof o[k] === "object" ? JSON.stringify(o[k]) : o[k]))));
    return t;
  }
  return el("span", typeof v === "object" ? JSON.stringify(v) : v);
}

function renderReply(title, r) {
  const box = $("device-result");
  box.replaceChildren(el("h3", title));
  const t = el("table");
  for (const [k, v] of Object.entries(r)) {
    const td = el("td");
    td.appendChild(renderValue(v));
    t.appendChild(row([el("th", k), td]));
  }
  box.appendChild(t);
}

async function deviceCall(title, method, req) {
  const devid = $("devid").value.trim();
  if (!devid) { $("device-result").textContent = "enter a device id"; return; }
  try {
    renderReply(title + " " + devid, await call(method, Object.assign({ devid: devid }, req)));
  } catch (err) {
    showError("device-result", err);
  }
}

$("device-form").addEventListener("submit", (e) => { e.preventDefault(); deviceCall("lookup", "Lookup", {}); });
$("find").addEventListener("click", () => deviceCall("find", "FindDevice", {}));
$("kick").addEventListener("click", () => {
  if (!confirm("Disconnect every connection of " + $("devid").value.trim() + "?")) return;
  deviceCall("kick", "KickDevice", { reason: "dashboard" });
});

// ---- history charts

async function history() {
  clearTimeout(historyTimer);
  try {
    const h = await call("History");
    $("history-gateway").textContent = h.gateway;
    $("history-interval").textContent = "(a sample every " + h.interval + ", this replica)";
    drawHistory(h.samples || []);
  } catch (err) {
    $("history-interval").textContent = "history: " + (err.code || "") + " " + err.message;
  }
  historyTimer = setTimeout(history, HISTORY_MS);
}

function drawHistory(samples) {
  const ids = [...new Set(samples.flatMap((s) => Object.keys(s.connections || {})))].sort();
  const legend = $("legend");
  legend.replaceChildren();
  const series = ids.map((id, i) => ({ name: id, color: COLORS[i % COLORS.length], values: samples.map((s) => num((s.connections || {})[id])) }));
  const rates = [
    { name: "accepts/s", color: "#2ca02c", values: samples.map((s) => num(s.acceptsPerSecond)) },
    { name: "closes/s", color: "#d62728", values: samples.map((s) => num(s.closesPerSecond)) },
  ];
  for (const s of series.concat(rates)) {
    const sp = el("span");
    const sw = el("i");
    sw.style.background = s.color;
    sp.append(sw, s.name);
    legend.appendChild(sp);
  }
  const times = samples.map((s) => Date.parse(s.at));
  $("chart-conns").dataset.samples = samples.length;
  drawChart($("chart-conns"), times, series);
  drawChart($("chart-rates"), times, rates);
}

// drawChart draws line series on a canvas over the time the samples span
// (a minute to the last hour), with a y axis from zero to a rounded
// maximum and four time ticks.
function drawChart(cv, times, series) {
  const ctx = cv.getContext("2d");
  const W = cv.width, H = cv.height, L = 48, R = 8, T = 8, B = 22;
  ctx.clearRect(0, 0, W, H);
  const now = times.length ? times[times.length - 1] : Date.now();
  const span = Math.min(3600e3, Math.max(60e3, times.length ? now - times[0] : 0));
  const t0 = now - span;
  let max = 0;
  for (const s of series) for (const v of s.values) max = Math.max(max, v);
  max = niceMax(max);
  const x = (t) => L + (W - L - R) * (t - t0) / span;
  const y = (v) => H - B - (H - B - T) * v / max;
  ctx.font = "11px system-ui, sans-serif";
  ctx.strokeStyle = "#eceff3";
  ctx.fillStyle = "#6b7385";
  ctx.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const v = max * i / 4;
    ctx.beginPath(); ctx.moveTo(L, y(v)); ctx.lineTo(W - R, y(v)); ctx.stroke();
    ctx.fillText(fmtNum(v), 4, y(v) + 4);
  }
  for (let i = 4; i >= 0; i--) {
    const t = now - span * i / 4;
    ctx.beginPath(); ctx.moveTo(x(t), T); ctx.lineTo(x(t), H - B); ctx.stroke();
    ctx.fillText(i ? "-" + fmtDur(String(span * i / 4000)) : "now", x(t) - (i ? 18 : 20), H - 6);
  }
  ctx.lineWidth = 2;
  for (const s of series) {
    ctx.strokeStyle = s.color;
    ctx.beginPath();
    s.values.forEach((v, i) => { if (i === 0) ctx.moveTo(x(times[i]), y(v)); else ctx.lineTo(x(times[i]), y(v)); });
    if (s.values.length === 1) ctx.arc(x(times[0]), y(s.values[0]), 2, 0, 2 * Math.PI);
    ctx.stroke();
  }
}

// fmtDur shortens a protojson duration ("4.189715601s") to "4.2s", "3m 12s" or "2h 5m".
function fmtDur(d) {
  const s = parseFloat(d || "0");
  if (s < 60) return (Math.round(s * 10) / 10) + "s";
  const two = (big, bu, small, su) => big + bu + (small ? " " + small + su : "");
  if (s < 3600) return two(Math.floor(s / 60), "m", Math.floor(s % 60), "s");
  return two(Math.floor(s / 3600), "h", Math.floor((s % 3600) / 60), "m");
}

function niceMax(v) {
  if (v <= 0) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function fmtNum(v) { return v >= 1000 ? (v / 1000).toFixed(v >= 10000 ? 0 : 1) + "k" : String(Math.round(v * 10) / 10); }

start();
