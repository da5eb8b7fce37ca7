"""The dashboard page: one HTML document with inline CSS and JavaScript, drawing SVG.

No build step and nothing fetched from elsewhere (the server's Content-Security-Policy forbids it):
the page works offline and is served as is. It polls `api/state` (`bus.dashboard.Board.to_json`)
every sampling interval and redraws: per function its numbers, a chart of lag (left axis) and
replicas desired/actual (right axis) over time with the scaling decisions marked, a chart of
events per second, and the table of recent decisions with their reasons.
"""

from __future__ import annotations

import json

__all__ = ["COLORS", "PAGE"]

COLORS = {
    "lag": "#2563eb",
    "retry_lag": "#f59e0b",
    "desired": "#9333ea",
    "actual": "#16a34a",
    "events_in": "#0891b2",
    "events_out": "#db2777",
}
"""Series colours (the screenshot test looks for the lag colour)."""

_STYLE = """
:root { --ink: #0f172a; --muted: #64748b; --line: #e2e8f0; --bg: #f1f5f9; --card: #fff; --bad: #dc2626; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: var(--ink); background: var(--bg); }
header { position: sticky; top: 0; z-index: 2; display: flex; align-items: center; gap: 16px;
  flex-wrap: wrap; padding: 10px 24px; background: #0f172a; color: #e2e8f0; }
header h1 { margin: 0; font-size: 17px; font-weight: 650; letter-spacing: .2px; }
header h1 span { color: #94a3b8; font-weight: 400; }
header .meta { color: #94a3b8; font-size: 13px; }
header .spacer { flex: 1; }
.dot { display: inline-block; width: 9px; height: 9px; border-radius: 50%; background: #22c55e;
  margin-right: 6px; vertical-align: 1px; }
.dot.off { background: var(--bad); }
.ranges button { border: 1px solid #334155; background: transparent; color: #cbd5e1; padding: 3px 10px;
  font: inherit; font-size: 12px; cursor: pointer; }
.ranges button:first-child { border-radius: 6px 0 0 6px; }
.ranges button:last-child { border-radius: 0 6px 6px 0; }
.ranges button.on { background: #334155; color: #fff; }
main { max-width: 1400px; margin: 0 auto; padding: 16px 24px 40px; }
.banner { background: #fef2f2; color: #991b1b; border: 1px solid #fecaca; border-radius: 8px;
  padding: 10px 14px; margin-bottom: 14px; }
.banner[hidden], .empty[hidden] { display: none; }
.empty { color: var(--muted); padding: 40px 0; text-align: center; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 12px;
  box-shadow: 0 1px 2px rgba(15, 23, 42, .05); padding: 16px 20px 18px; margin-bottom: 18px; }
.card-head { display: flex; align-items: baseline; gap: 12px; }
.card h2 { margin: 0; font-size: 19px; }
.card .sub { color: var(--muted); font-size: 13px; }
.stats { display: flex; flex-wrap: wrap; gap: 8px; margin: 12px 0 10px; }
.stat { min-width: 96px; padding: 6px 11px; border: 1px solid var(--line); border-radius: 8px; }
.stat .label { display: block; color: var(--muted); font-size: 11px; text-transform: uppercase;
  letter-spacing: .5px; }
.stat .value { font-size: 21px; font-weight: 650; font-variant-numeric: tabular-nums; }
.stat.bad { border-color: #fecaca; background: #fef2f2; }
.stat.bad .value { color: var(--bad); }
.now { display: flex; gap: 10px; align-items: baseline; padding: 7px 12px; background: #f8fafc;
  border-radius: 8px; margin-bottom: 6px; }
.now .label, h3 { color: var(--muted); font-size: 11px; text-transform: uppercase; letter-spacing: .5px;
  font-weight: 600; }
.now .reason { flex: 1; font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12.5px; }
.now .when { color: var(--muted); font-size: 12px; white-space: nowrap; }
.chart-head { display: flex; align-items: center; gap: 16px; margin: 12px 0 2px; flex-wrap: wrap; }
h3 { margin: 0; }
.legend { display: flex; gap: 14px; flex-wrap: wrap; font-size: 12px; color: #334155; }
.legend i { display: inline-block; width: 18px; height: 0; border-top: 3px solid; margin-right: 5px;
  vertical-align: 3px; }
.legend i.dash { border-top-style: dashed; }
.legend i.mark { width: 0; height: 10px; border-top: 0; border-left: 2px dotted #94a3b8;
  vertical-align: -1px; }
.plot { position: relative; }
.plot svg { display: block; overflow: visible; }
.plot text { font-size: 11px; fill: #64748b; font-variant-numeric: tabular-nums; }
.plot .axis-title { font-size: 11px; fill: #475569; }
.tip { position: absolute; pointer-events: none; background: rgba(15, 23, 42, .92); color: #f8fafc;
  font-size: 12px; padding: 6px 9px; border-radius: 6px; white-space: nowrap; display: none; }
.tip b { font-weight: 600; }
table { width: 100%; border-collapse: collapse; margin-top: 6px; font-size: 13px; }
th { text-align: left; color: var(--muted); font-weight: 600; font-size: 11px; text-transform: uppercase;
  letter-spacing: .5px; border-bottom: 1px solid var(--line); padding: 5px 8px; }
td { padding: 5px 8px; border-bottom: 1px solid #f1f5f9; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.time { white-space: nowrap; font-variant-numeric: tabular-nums; color: #334155; }
td.reason { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12.5px; }
td.reason small { display: block; color: var(--muted); font-family: system-ui, sans-serif; }
th.num { text-align: right; }
tr.none td { color: var(--muted); font-style: italic; }
.decisions-wrap { max-height: 320px; overflow-y: auto; }
"""

_SCRIPT = r"""
"use strict";
const SVG = "http://www.w3.org/2000/svg";
const DASH = "\u2013";
const COLORS = __COLORS__;
const RANGES = [[300, "5 min"], [900, "15 min"], [3600, "1 h"]];
const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600];
let state = null;
let range = 900;
const cards = new Map();

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const child of children) node.append(child);
  return node;
}
function svgEl(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}
const pad = (n) => String(n).padStart(2, "0");
function clock(t, seconds = true) {
  const d = new Date(t * 1000);
  return pad(d.getHours()) + ":" + pad(d.getMinutes()) + (seconds ? ":" + pad(d.getSeconds()) : "");
}
function duration(s) {
  if (s == null) return DASH;
  if (s < 1) return s.toFixed(2) + "s";
  if (s < 10) return s.toFixed(1) + "s";
  s = Math.floor(s);
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m" + pad(s % 60) + "s";
  return Math.floor(s / 3600) + "h" + pad(Math.floor(s % 3600 / 60)) + "m";
}
const ago = (t) => (t == null || !state || state.updated == null) ? ""
  : duration(Math.max(0, state.updated - t)) + " ago";
const count = (n) => n == null ? DASH : Number(n).toLocaleString("en-US");
const rate = (v) => v == null ? DASH : (v < 100 ? v.toFixed(1) : v.toFixed(0));

function niceStep(span, parts) {
  const raw = span / parts;
  const pow = Math.pow(10, Math.floor(Math.log10(raw)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * pow >= raw) return m * pow;
  return 10 * pow;
}
function scale(max, integer) {
  if (!(max > 0)) max = 1;
  let step = niceStep(max, 4);
  if (integer) step = Math.max(1, Math.ceil(step));
  return {step, top: Math.max(step, Math.ceil(max * 1.08 / step) * step)};
}
function tickLabel(v) {
  if (v >= 1e6) return (v / 1e6).toLocaleString("en-US", {maximumFractionDigits: 1}) + "M";
  if (v >= 1e4) return (v / 1e3).toLocaleString("en-US", {maximumFractionDigits: 1}) + "k";
  return v.toLocaleString("en-US", {maximumFractionDigits: 2});
}

// spec: {t, t0, t1, height, left: {title, series}, right: {title, series, integer} | null, markers}
// a series: {key, label, values, step, dash, width}
function drawChart(plot, spec) {
  const svg = plot.querySelector("svg");
  const width = Math.max(320, plot.clientWidth);
  const height = spec.height;
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.replaceChildren();
  const m = {l: 62, r: 52, t: 10, b: 24};  // the same with or without a right axis: time lines up
  const pw = width - m.l - m.r, ph = height - m.t - m.b;
  const {t, t0, t1} = spec;
  const x = (v) => m.l + (v - t0) / (t1 - t0) * pw;
  const first = Math.max(0, t.findIndex((v) => v >= t0) - 1);
  const visible = (values) => values.slice(first).filter((v) => v != null);
  const axes = [];
  for (const side of ["left", "right"]) {
    const axis = spec[side];
    if (!axis) continue;
    const max = Math.max(0, ...axis.series.flatMap((s) => visible(s.values)));
    const {step, top} = scale(max, axis.integer);
    axes.push({side, axis, step, top, y: (v) => m.t + ph - v / top * ph});
  }
  const grid = svgEl("g", {"stroke": "#eef2f7", "stroke-width": 1});
  const labels = svgEl("g", {});
  svg.append(grid, labels);
  for (const {side, axis, step, top, y} of axes) {
    for (let v = 0; v <= top + step / 2; v += step) {
      const py = Math.round(y(v)) + 0.5;
      if (side === "left") grid.append(svgEl("line", {x1: m.l, x2: m.l + pw, y1: py, y2: py}));
      const label = svgEl("text", side === "left"
        ? {x: m.l - 7, y: py + 4, "text-anchor": "end"}
        : {x: m.l + pw + 7, y: py + 4, "text-anchor": "start"});
      label.textContent = tickLabel(v);
      labels.append(label);
    }
    const title = svgEl("text", {"class": "axis-title", "text-anchor": "middle",
      transform: side === "left" ? `translate(12 ${m.t + ph / 2}) rotate(-90)`
        : `translate(${width - 8} ${m.t + ph / 2}) rotate(90)`});
    title.textContent = axis.title;
    labels.append(title);
  }
  const span = t1 - t0;
  const tstep = TIME_STEPS.find((s) => span / s <= pw / 95) || 3600;
  for (let v = Math.ceil(t0 / tstep) * tstep; v <= t1; v += tstep) {
    const px = Math.round(x(v)) + 0.5;
    grid.append(svgEl("line", {x1: px, x2: px, y1: m.t, y2: m.t + ph}));
    const label = svgEl("text", {x: px, y: m.t + ph + 16, "text-anchor": "middle"});
    label.textContent = clock(v, tstep < 60);
    labels.append(label);
  }
  const frame = svgEl("g", {stroke: "#94a3b8", "stroke-width": 1, fill: "none"});
  frame.append(svgEl("line", {x1: m.l - 0.5, x2: m.l - 0.5, y1: m.t, y2: m.t + ph}));
  frame.append(svgEl("line", {x1: m.l, x2: m.l + pw, y1: m.t + ph + 0.5, y2: m.t + ph + 0.5}));
  if (spec.right) {
    frame.append(svgEl("line", {x1: m.l + pw + 0.5, x2: m.l + pw + 0.5, y1: m.t, y2: m.t + ph}));
  }
  svg.append(frame);
  const clip = "clip-" + Math.random().toString(36).slice(2);
  const defs = svgEl("defs", {});
  const rect = svgEl("clipPath", {id: clip});
  rect.append(svgEl("rect", {x: m.l, y: m.t - 3, width: pw, height: ph + 6}));
  defs.append(rect);
  svg.append(defs);
  const series = svgEl("g", {"clip-path": `url(#${clip})`, fill: "none",
    "stroke-linejoin": "round", "stroke-linecap": "round"});
  svg.append(series);
  for (const mark of spec.markers || []) {
    if (mark.t < t0 || mark.t > t1) continue;
    const px = Math.round(x(mark.t)) + 0.5;
    const g = svgEl("g", {"class": "marker"});
    g.append(svgEl("line", {x1: px, x2: px, y1: m.t, y2: m.t + ph, stroke: "#94a3b8",
      "stroke-width": 1.5, "stroke-dasharray": "2 3"}));
    g.append(svgEl("path", {d: `M${px - 5} ${m.t} h10 l-5 7 z`, fill: "#64748b"}));
    const tip = svgEl("title", {});
    tip.textContent = clock(mark.t) + "  " + mark.title;
    g.append(tip);
    series.append(g);
  }
  for (const {axis, y} of axes) {
    for (const s of axis.series) {
      if (s.hideFlat && !visible(s.values).some((v) => v > 0)) continue;
      let d = "", open = false;
      for (let i = first; i < t.length; i++) {
        const v = s.values[i];
        if (v == null) { open = false; continue; }
        const px = x(t[i]).toFixed(1), py = y(v).toFixed(1);
        if (!open) d += `M${px} ${py}`;
        else if (s.step) d += `H${px}V${py}`;
        else d += `L${px} ${py}`;
        open = true;
      }
      if (!d) continue;
      series.append(svgEl("path", {d, stroke: COLORS[s.key], "stroke-width": s.width || 2,
        "stroke-dasharray": s.dash ? "6 4" : "none", "class": "series series-" + s.key}));
    }
  }
  // Where the plot area is on the page (left, top, width, height): for tests reading screenshots.
  const box = svg.getBoundingClientRect();
  svg.dataset.plot = [box.left + window.scrollX + m.l, box.top + window.scrollY + m.t, pw, ph]
    .map(Math.round).join(",");
  const cursor = svgEl("line", {y1: m.t, y2: m.t + ph, stroke: "#0f172a", "stroke-width": 1,
    "stroke-opacity": 0.35, visibility: "hidden"});
  svg.append(cursor);
  const overlay = svgEl("rect", {x: m.l, y: m.t, width: pw, height: ph, fill: "transparent"});
  svg.append(overlay);
  const tipBox = plot.querySelector(".tip");
  overlay.addEventListener("mousemove", (ev) => {
    const at = t0 + (ev.clientX - svg.getBoundingClientRect().left - m.l) / pw * (t1 - t0);
    let i = 0;
    for (let j = first; j < t.length; j++) if (Math.abs(t[j] - at) < Math.abs(t[i] - at)) i = j;
    const px = x(t[i]);
    cursor.setAttribute("x1", px); cursor.setAttribute("x2", px);
    cursor.setAttribute("visibility", "visible");
    tipBox.replaceChildren(el("b", {}, clock(t[i])));
    for (const {axis} of axes) for (const s of axis.series) {
      const v = s.values[i];
      tipBox.append(el("br"), el("span", {style: `color:${COLORS[s.key]}`}, "\u25a0 "),
        `${s.label}: ${v == null ? DASH : (s.rate ? rate(v) : count(v))}`);
    }
    tipBox.style.display = "block";
    const left = px + 14 + tipBox.offsetWidth > width ? px - 14 - tipBox.offsetWidth : px + 14;
    tipBox.style.left = left + "px";
    tipBox.style.top = (m.t + 6) + "px";
  });
  overlay.addEventListener("mouseleave", () => {
    cursor.setAttribute("visibility", "hidden");
    tipBox.style.display = "none";
  });
}

function legend(items) {
  return el("div", {"class": "legend"}, ...items.map(([key, label, dash]) =>
    el("span", {}, el("i", {"class": dash || "", style: key ? `border-color:${COLORS[key]}` : ""}), label)));
}
function stat(name, label) {
  const value = el("span", {"class": "value", id: `${name}`}, DASH);
  return [el("div", {"class": "stat"}, el("span", {"class": "label"}, label), value), value];
}

function card(name) {
  const root = el("section", {"class": "card", id: `fn-${name}`, "data-function": name});
  const sub = el("span", {"class": "sub"});
  root.append(el("div", {"class": "card-head"}, el("h2", {}, name), sub));
  const stats = {};
  const row = el("div", {"class": "stats"});
  for (const [key, label] of [["lag", "Lag"], ["lagtime", "Lag time"], ["oldest", "Oldest"],
      ["replicas", "Replicas desired / actual"], ["in", "In / s"], ["out", "Out / s"], ["p99", "p99"],
      ["retries", "Retries pending"], ["dlq", "Dead letters"]]) {
    const [box, value] = stat(`${key}-${name}`, label);
    stats[key] = {box, value};
    row.append(box);
  }
  root.append(row);
  const reason = el("span", {"class": "reason"}, DASH);
  const when = el("span", {"class": "when"});
  root.append(el("div", {"class": "now"}, el("span", {"class": "label"}, "Supervisor"), reason, when));
  const lagPlot = el("div", {"class": "plot"}, svgEl("svg", {"class": "chart-lag", role: "img",
    "aria-label": `lag and replicas of ${name} over time`}), el("div", {"class": "tip"}));
  root.append(el("div", {"class": "chart-head"}, el("h3", {}, "Lag and replicas"),
    legend([["lag", "lag (records)"], ["retry_lag", "retries pending"],
      ["desired", "replicas desired", "dash"], ["actual", "replicas actual"],
      [null, "scaling decision", "mark"]])),
    lagPlot);
  const ratePlot = el("div", {"class": "plot"}, svgEl("svg", {"class": "chart-rate", role: "img",
    "aria-label": `events per second of ${name} over time`}), el("div", {"class": "tip"}));
  root.append(el("div", {"class": "chart-head"}, el("h3", {}, "Events per second"),
    legend([["events_in", "in (to the function topic)"], ["events_out", "out (processed)"]])), ratePlot);
  const body = el("tbody");
  root.append(el("div", {"class": "chart-head"}, el("h3", {}, "Scaling decisions")),
    el("div", {"class": "decisions-wrap"}, el("table", {"class": "decisions"},
      el("thead", {}, el("tr", {}, el("th", {}, "Time"), el("th", {"class": "num"}, "Desired"),
        el("th", {"class": "num"}, "Actual"), el("th", {"class": "num"}, "Lag"), el("th", {}, "Reason"))),
      body)));
  document.getElementById("functions").append(root);
  return {root, sub, stats, reason, when, lagPlot, ratePlot, body};
}

function decisionRows(body, decisions) {
  body.replaceChildren();
  if (!decisions.length) {
    body.append(el("tr", {"class": "none"}, el("td", {colspan: 5},
      "no decisions yet: the supervisor of `bus up` publishes them")));
    return;
  }
  for (const d of decisions) {
    const reason = el("td", {"class": "reason"}, d.reason || DASH);
    if (d.repeats > 1) {
      const also = d.last_reason && d.last_reason !== d.reason ? ` · latest: ${d.last_reason}` : "";
      const last = d.last_at ? clock(Date.parse(d.last_at) / 1000) : "?";
      const times = d.repeats === 2 ? "once" : `${d.repeats - 1} times`;
      reason.append(el("small", {}, `confirmed ${times} since, last at ${last}${also}`));
    }
    body.append(el("tr", {},
      el("td", {"class": "time", title: d.at || ""}, d.t == null ? (d.at || DASH) : clock(d.t)),
      el("td", {"class": "num"}, String(d.desired)), el("td", {"class": "num"}, String(d.actual)),
      el("td", {"class": "num"}, count(d.total_lag)), reason));
  }
}

function render() {
  const names = Object.keys(state.functions);
  document.getElementById("prefix").textContent = state.prefix;
  document.getElementById("updated").textContent = state.updated == null ? "waiting for the first sample"
    : `sampled ${clock(state.updated)} · every ${state.interval} s`;
  const banner = document.getElementById("error");
  banner.hidden = !state.error;
  banner.textContent = state.error ? "The last sample failed: " + state.error : "";
  document.getElementById("empty").hidden = names.length > 0;
  for (const name of names) {
    const f = state.functions[name];
    const c = cards.get(name) || card(name);
    cards.set(name, c);
    const s = f.status;
    c.sub.textContent = s ? `${s.partitions} partition${s.partitions === 1 ? "" : "s"}` : "not sampled yet";
    const set = (key, text, bad) => {
      c.stats[key].value.textContent = text;
      c.stats[key].box.classList.toggle("bad", !!bad);
    };
    set("lag", s ? count(s.lag) : DASH);
    set("lagtime", s ? (s.stalled ? "stalled" : duration(s.lag_seconds)) : DASH, s && s.stalled);
    set("oldest", s ? duration(s.oldest_age_seconds) : DASH);
    const known = s && s.replicas_desired != null;
    set("replicas", known ? `${s.replicas_desired} / ${s.replicas_actual}` : DASH + " / " + DASH);
    set("in", s ? rate(s.events_in_per_second) : DASH);
    set("out", s ? rate(s.events_out_per_second) : DASH);
    set("p99", s ? duration(s.p99_seconds) : DASH);
    set("retries", s ? count(s.retries_pending) : DASH);
    set("dlq", f.dlq == null ? DASH : count(f.dlq), f.dlq > 0);
    c.stats.dlq.value.dataset.dlq = f.dlq == null ? "" : String(f.dlq);
    const latest = f.latest_decision;
    c.reason.textContent = latest ? latest.reason : "no decision published for this function";
    c.when.textContent = latest && latest.t != null ? ago(latest.t) : "";
    const h = f.history;
    const t1 = h.t.length ? h.t[h.t.length - 1] : (state.updated || Date.now() / 1000);
    let t0 = h.t.length ? Math.max(h.t[0], t1 - range) : t1 - range;
    if (t1 - t0 < 1) t0 = t1 - Math.max(1, state.interval);
    // A marker where the desired replicas changed (not where the actual ones caught up).
    const markers = f.decisions.filter((d, i) => d.t != null
      && (i === f.decisions.length - 1 || f.decisions[i + 1].desired !== d.desired))
      .map((d) => ({t: d.t, title: `desired ${d.desired}, actual ${d.actual}: ${d.reason}`}));
    drawChart(c.lagPlot, {t: h.t, t0, t1, height: 250, markers,
      left: {title: "lag (records)", integer: true, series: [
        {key: "retry_lag", label: "retries pending", values: h.retry_lag, hideFlat: true},
        {key: "lag", label: "lag", values: h.lag, width: 2.5}]},
      right: {title: "replicas", integer: true, series: [
        {key: "actual", label: "replicas actual", values: h.actual, step: true, width: 3},
        {key: "desired", label: "replicas desired", values: h.desired, step: true, dash: true}]}});
    drawChart(c.ratePlot, {t: h.t, t0, t1, height: 140, right: null,
      left: {title: "events / s", series: [
        {key: "events_in", label: "in / s", values: h.events_in, rate: true},
        {key: "events_out", label: "out / s", values: h.events_out, rate: true}]}});
    decisionRows(c.body, f.decisions);
  }
  document.body.dataset.rendered = String(state.updated || "");
}

function setConnected(ok, why) {
  document.getElementById("dot").className = ok ? "dot" : "dot off";
  document.getElementById("dot").title = ok ? "connected" : "the dashboard server does not answer: " + why;
}

async function poll() {
  try {
    const response = await fetch("api/state", {cache: "no-store"});
    if (!response.ok) throw new Error("HTTP " + response.status);
    state = await response.json();
    render();
    setConnected(true);
  } catch (err) {
    setConnected(false, String(err));
  }
  setTimeout(poll, Math.max(500, (state ? state.interval : 2) * 1000));
}

function ranges() {
  const box = document.getElementById("ranges");
  for (const [seconds, label] of RANGES) {
    const button = el("button", {type: "button", "class": seconds === range ? "on" : ""}, label);
    button.addEventListener("click", () => {
      range = seconds;
      for (const b of box.children) b.classList.toggle("on", b === button);
      if (state) render();
    });
    box.append(button);
  }
}

ranges();
window.addEventListener("resize", () => { if (state) render(); });
poll();
"""

PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>bus dashboard</title>
<style>{_STYLE}</style>
</head>
<body>
<header>
  <h1>bus <span>dashboard</span></h1>
  <span class="meta">prefix <b id="prefix">-</b></span>
  <span class="meta"><span id="dot" class="dot"></span><span id="updated">connecting...</span></span>
  <span class="spacer"></span>
  <span class="ranges" id="ranges"></span>
</header>
<main>
  <div id="error" class="banner" hidden></div>
  <div id="empty" class="empty" hidden>The manifest has no functions.</div>
  <div id="functions"></div>
</main>
<script>{_SCRIPT.replace("__COLORS__", json.dumps(COLORS))}</script>
</body>
</html>
"""
"""The whole page, as served at `/`."""
