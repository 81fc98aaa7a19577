"use strict";
// The desk's web view: polls the gateway's JSON API with the bearer token kept in this tab's
// sessionStorage (never in a URL). A part whose service is down says so; nothing else breaks.
// The equity curve is inline SVG drawn here; the replays' PNGs are fetched with the token and
// shown from blob: URLs (an <img src> cannot send the Authorization header).
const REFRESH_MS = 5000;
const EQUITY_DAYS = 365;
const REPLAYS_SHOWN = 10;
const $ = (sel) => document.querySelector(sel);
const esc = (v) => String(v ?? "–").replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const money = (v) => (typeof v === "number" ? v.toLocaleString("en-AU", { style: "currency", currency: "AUD" }) : "–");
const pct = (v) => (typeof v === "number" ? `${(v * 100).toFixed(0)}%` : "–");
const shortTime = (iso) => (iso ? new Date(iso).toLocaleString("en-AU", { timeZone: "Australia/Sydney", day: "2-digit", month: "2-digit", hour: "2-digit", minute: "2-digit", hour12: false }) : "–");
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
    body("trades", r.data.trades.length ? table(["time", "symbol", "action", "qty", "price", "pred."], r.data.trades.map((t) => [
      td(shortTime(t.timestamp)), td(esc(t.symbol)), td(esc(t.action)), td(esc(t.quantity), "num"), td(typeof t.price === "number" ? t.price.toFixed(3) : "–", "num"),
      td(t.prediction_id ? `<a href="#prediction/${encodeURIComponent(t.prediction_id)}" class="prediction-link">${esc(t.prediction_id.slice(0, 6))}</a>` : "manual"),
    ])) : "<p>no trades yet</p>");
  },
  async equity() {
    const r = await api(`/api/equity?days=${EQUITY_DAYS}`);
    if (!r.data) return body("equity", downText(r));
    const { points, starting_capital: start } = r.data, last = points[points.length - 1];
    const change = last.equity / start - 1;
    body("equity", `${equityChart(points, start)}<p class="equity-note">${esc(points[0].day)} → ${esc(last.day)} · now <b>${money(last.equity)}</b> · <span class="${change >= 0 ? "ok" : "bad"}">${change >= 0 ? "+" : ""}${(change * 100).toFixed(2)}%</span> on ${money(start)} · ${points.length} day${points.length === 1 ? "" : "s"}</p>`);
  },
  async replays() {
    const r = await api("/api/replays").catch((e) => { replaysShown = ""; throw e; });
    if (!r.data || !r.data.length) { replaysShown = ""; return body("replays", downText(r) || "<p>no replay reports</p>"); }
    const shown = r.data.slice(0, REPLAYS_SHOWN), signature = JSON.stringify(shown.map((x) => [x.name, x.modified, x.files]));
    if (signature === replaysShown) return;  // unchanged: the images stay as they are, no flicker
    replaysShown = signature;
    body("replays", shown.map((x) => {
      const pngs = x.files.filter((f) => f.toLowerCase().endsWith(".png"));
      const figures = pngs.map((f) => `<figure><img class="replay-png" alt="${esc(f)} of ${esc(x.name)}" data-src="/api/replays/${encodeURIComponent(x.name)}/${encodeURIComponent(f)}" data-version="${esc(x.modified)}"><figcaption>${esc(f)}</figcaption></figure>`);
      return `<div class="replay"><h3>${esc(x.name)}</h3><p class="files">${time(x.modified)} · ${esc(x.files.join(", "))}</p>${figures.join("")}</div>`;
    }).join(""));
    await showImages(document.querySelectorAll("#replays img[data-src]"));
  },
};

// SVG user units; the chart scales to the panel's width (and a phone's) keeping its shape.
const CHART = { width: 600, height: 200, pad: 8 };

function equityChart(days, start) {
  // One day only (the desk's first): drawn from the starting capital to the equity now.
  const points = days.length > 1 ? days : [{ day: "start", equity: start }, ...days];
  const values = points.map((p) => p.equity).concat([start]);
  let low = Math.min(...values), high = Math.max(...values);
  if (high - low < 0.01) { low -= 1; high += 1; }  // a flat curve is drawn mid-height
  const { width: w, height: h, pad } = CHART, n = points.length;
  const x = (i) => (n > 1 ? pad + (i * (w - 2 * pad)) / (n - 1) : w / 2);
  const y = (v) => pad + ((h - 2 * pad) * (high - v)) / (high - low);
  const line = points.map((p, i) => `${x(i).toFixed(1)},${y(p.equity).toFixed(1)}`).join(" ");
  const lastX = x(n - 1).toFixed(1), lastY = y(points[n - 1].equity).toFixed(1);
  return `<svg class="chart" viewBox="0 0 ${w} ${h}" role="img" aria-label="equity from ${esc(days[0].day)} to ${esc(days[days.length - 1].day)}">`
    + `<line class="start" x1="0" x2="${w}" y1="${y(start).toFixed(1)}" y2="${y(start).toFixed(1)}" stroke="#9aa4ae" stroke-dasharray="6 4"/>`
    + `<text x="${w - pad}" y="${pad + 14}" text-anchor="end" font-size="16" fill="#5b6570">${esc(money(high))}</text>`
    + `<text x="${w - pad}" y="${h - pad}" text-anchor="end" font-size="16" fill="#5b6570">${esc(money(low))}</text>`
    + `<polyline points="${line}" fill="none" stroke="#1f6feb" stroke-width="2.5" stroke-linejoin="round"/>`
    + `<circle cx="${lastX}" cy="${lastY}" r="4" fill="#1f6feb"/></svg>`;
}

let replaysShown = "";

// src + version -> blob: URL, fetched once per version of a file; dropped when no longer shown.
const images = new Map();

async function showImages(nodes) {
  const wanted = new Set();
  await Promise.all([...nodes].map(async (img) => {
    const key = `${img.dataset.src}#${img.dataset.version}`;
    wanted.add(key);
    if (!images.has(key)) images.set(key, fetchImage(img.dataset.src));
    try { img.src = await images.get(key); } catch (e) { images.delete(key); img.replaceWith(Object.assign(document.createElement("span"), { className: "bad", textContent: e.message })); }
  }));
  for (const [key, url] of images) if (!wanted.has(key)) { images.delete(key); url.then((u) => URL.revokeObjectURL(u), () => {}); }
}

async function fetchImage(src) {
  const answer = await fetch(src, { headers: { Authorization: `Bearer ${token()}` } });
  if (!answer.ok) throw new Error(`${src}: HTTP ${answer.status}`);
  return URL.createObjectURL(await answer.blob());
}

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
