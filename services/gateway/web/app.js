"use strict";
// The desk's web view: polls the gateway's JSON API with the bearer token kept in this tab's
// sessionStorage (never in a URL). A part whose service is down says so; nothing else breaks.
const REFRESH_MS = 5000;
const $ = (sel) => document.querySelector(sel);
const esc = (v) => String(v ?? "–").replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const money = (v) => (typeof v === "number" ? v.toLocaleString("en-AU", { style: "currency", currency: "AUD" }) : "–");
const pct = (v) => (typeof v === "number" ? `${(v * 100).toFixed(0)}%` : "–");
const time = (iso) => (iso ? new Date(iso).toLocaleString("en-AU", { timeZone: "Australia/Sydney", dateStyle: "short", timeStyle: "short" }) : "–");

function token() { return sessionStorage.getItem("gateway-token"); }

async function api(path) {
  const answer = await fetch(path, { headers: { Authorization: `Bearer ${token()}` } });
  if (answer.status === 401) { sessionStorage.removeItem("gateway-token"); showLogin("the token was refused"); throw new Error("unauthorized"); }
  if (!answer.ok) throw new Error(`${path}: HTTP ${answer.status}`);
  return answer.json();
}

function body(id, html) { $(`#${id} .body`).innerHTML = html; }
function downText(reply) { return Object.entries(reply.down || {}).map(([s, why]) => `<p class="down">${esc(s)} down: ${esc(why)}</p>`).join(""); }
function table(head, rows) {
  return `<table><tr>${head.map((h) => `<th>${esc(h)}</th>`).join("")}</tr>${rows.map((r) => `<tr>${r.join("")}</tr>`).join("")}</table>`;
}
const td = (v, cls = "") => `<td class="${cls}">${v}</td>`;

const panels = {
  async health() {
    const r = await api("/api/status");
    if (!r.data) return body("health", downText(r) || '<p class="down">supervisor down</p>');
    const light = { healthy: "ok", degraded: "warn" }[r.data.overall] || "bad";
    $("#light").className = `light ${light}`; $("#light").textContent = r.data.overall;
    body("health", table(["service", "state", "health", "restarts"], r.data.services.map((s) => [
      td(esc(s.name)), td(esc(s.state), s.state === "running" ? "ok" : "bad"), td(esc(s.health || "down"), s.health === "healthy" ? "ok" : "warn"), td(esc(s.restarts), "num"),
    ])));
  },
  async market() {
    const r = await api("/api/market/status");
    body("market", r.data ? `<p>${esc(r.data.phase)} · next open ${time(r.data.next_open)} · next close ${time(r.data.next_close)}${r.data.holiday ? ` · ${esc(r.data.holiday)}` : ""}</p>` : downText(r));
  },
  async symbols() {
    const [q, p] = await Promise.all([api("/api/quotes"), api("/api/predictions?limit=50")]);
    const latest = {};
    for (const x of (p.data && p.data.predictions) || []) if (!latest[x.symbol]) latest[x.symbol] = x;
    const symbols = Object.keys(q.data || {}).concat(Object.keys(q.errors || {}));
    body("symbols", downText(q) + downText(p) + table(["symbol", "price", "change", "signal", "confidence"], symbols.map((s) => {
      const quote = (q.data || {})[s] || {}, pred = latest[s] || {};
      return [td(esc(s)), td(quote.price ?? "–", "num"), td(typeof quote.change_pct === "number" ? `${quote.change_pct.toFixed(2)}%` : "–", "num"), td(esc(pred.signal)), td(pct(pred.confidence), "num")];
    })));
  },
  async portfolio() {
    const [r, pos] = await Promise.all([api("/api/portfolio"), api("/api/positions")]);
    if (!r.data) return body("portfolio", downText(r));
    const d = r.data, held = (pos.data && pos.data.positions) || [];
    body("portfolio", `<p>equity <b class="equity">${money(d.equity)}</b> · cash ${money(d.cash)} · day P&amp;L ${money(d.day_pnl)} · exposure ${typeof d.exposure_pct === "number" ? d.exposure_pct.toFixed(1) : "–"}%${d.trading_halted ? ' · <span class="bad">HALTED</span>' : ""}</p>`
      + table(["symbol", "qty", "value", "unrealised"], held.map((x) => [td(esc(x.symbol)), td(esc(x.quantity), "num"), td(money(x.market_value), "num"), td(money(x.unrealized_pnl), "num")])));
  },
  async alerts() {
    const r = await api("/api/alerts?limit=10");
    if (!r.data) return body("alerts", downText(r));
    body("alerts", r.data.alerts.length ? table(["when", "alert", "state"], r.data.alerts.map((a) => [td(time(a.last_at)), td(esc(a.title)), td(esc(a.state))])) : "<p>no alerts recorded</p>");
  },
  async tasks() {
    const r = await api("/api/tasks");
    if (!r.data) return body("tasks", downText(r));
    const next = r.data.filter((t) => t.next_run).sort((a, b) => a.next_run.localeCompare(b.next_run)).slice(0, 6);
    body("tasks", table(["task", "next run", "last"], next.map((t) => [td(esc(t.name)), td(time(t.next_run)), td(esc(t.last_status))])));
  },
  async trades() {
    const r = await api("/api/trades?limit=20");
    if (!r.data) return body("trades", downText(r));
    body("trades", r.data.trades.length ? table(["time", "symbol", "action", "qty", "price", "prediction"], r.data.trades.map((t) => [
      td(time(t.timestamp)), td(esc(t.symbol)), td(esc(t.action)), td(esc(t.quantity), "num"), td(esc(t.price), "num"),
      td(t.prediction_id ? `<a href="#prediction/${encodeURIComponent(t.prediction_id)}" class="prediction-link">${esc(t.prediction_id.slice(0, 8))}</a>` : "manual"),
    ])) : "<p>no trades yet</p>");
  },
  async replays() {
    const r = await api("/api/replays");
    body("replays", r.data && r.data.length ? table(["report", "files"], r.data.map((x) => [td(esc(x.name)), td(esc(x.files.join(", ")))])) : "<p>no replay reports</p>");
  },
};

async function showPrediction() {
  const match = location.hash.match(/^#prediction\/(.+)$/);
  $("#prediction").hidden = !match;
  if (!match) return;
  const answer = await fetch(`/api/predictions/${match[1]}`, { headers: { Authorization: `Bearer ${token()}` } });
  const r = await answer.json();
  if (answer.status === 404) return body("prediction", '<p class="bad">no such prediction</p>');
  if (!r.data) return body("prediction", downText(r));
  const p = r.data;
  body("prediction", `<p><b class="signal">${esc(p.signal)}</b> ${esc(p.symbol)} · confidence ${pct(p.confidence)} · ${time(p.created_at)} · id <code>${esc(p.prediction_id)}</code></p><h3>Inputs</h3><pre class="inputs">${esc(JSON.stringify(p.inputs, null, 2))}</pre>`);
  $("#prediction").scrollIntoView();
}

async function refresh() {
  if (!token()) return;
  await Promise.all(Object.entries(panels).map(([name, draw]) => draw().catch((e) => body(name, `<p class="down">${esc(e.message)}</p>`))));
  $("#updated").textContent = `updated ${new Date().toLocaleTimeString("en-AU")}`;
}

function showLogin(why) {
  $("#desk").hidden = true; $("#login").hidden = false; $("#login-error").textContent = why || "";
}

$("#login").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem("gateway-token", $("#token").value.trim());
  $("#login").hidden = true; $("#desk").hidden = false;
  refresh(); showPrediction();
});
window.addEventListener("hashchange", () => showPrediction().catch(() => {}));
if (token()) { $("#desk").hidden = false; refresh(); showPrediction().catch(() => {}); } else showLogin();
setInterval(refresh, REFRESH_MS);
