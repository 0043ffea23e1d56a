// The agent dashboard: reads /dashboard/api/* and draws, per app, one SVG chart per signal
// (a line per cohort) with the deploy events marked on the same time axis, a table of the
// latest values, the events, and the audit tail. Text goes into the page with textContent
// only, never as markup.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
// The longest range the page offers (the agent keeps 15 minutes of 1 s samples and 4 hours
// of 30 s ones).
const MAX_RANGE_MS = 4 * 60 * 60 * 1000;
const RECENT = 10; // samples summed for the table's latest values
const REFRESH_MS = 2000;
const W = 600, H = 150, PAD_L = 48, PAD_R = 8, PAD_T = 8, PAD_B = 18;

const METRICS = [
  { key: "error_rate", title: "Error rate (5xx share)", value: (s) => (s.responses > 0 ? s.errors / s.responses : null), fmt: (v) => (v * 100).toFixed(2) + "%" },
  { key: "p95", title: "p95 latency (upper bound)", value: (s) => s.p95_ms, fmt: (v) => "\u2264 " + v.toFixed(0) + " ms" },
  { key: "cpu", title: "CPU (share of one core)", value: (s) => (s.cpu == null ? null : s.cpu * 100), fmt: (v) => v.toFixed(1) + "%" },
  { key: "memory", title: "Resident memory", value: (s) => (s.memory == null ? null : s.memory / 1048576), fmt: (v) => v.toFixed(1) + " MiB" },
];

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text != null) e.textContent = text;
  return e;
}

function svgEl(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text != null) e.textContent = text;
  return e;
}

function cohortClass(c) {
  return ["stable", "canary", "preview"].includes(c) ? "c-" + c : "c-other";
}

function clock(ms) {
  return new Date(ms).toISOString().slice(11, 19);
}

async function getJson(path) {
  const r = await fetch(path, { cache: "no-store" });
  if (!r.ok) throw new Error(path + ": " + r.status);
  return r.json();
}

// The latest values over the last RECENT samples of a cohort.
function recent(samples) {
  const tail = samples.slice(-RECENT);
  const out = { responses: 0, errors: 0, p95_ms: null, cpu: null, memory: null, span_ms: 0 };
  for (const s of tail) {
    out.responses += s.responses;
    out.errors += s.errors;
    out.span_ms += s.span_ms;
    if (s.p95_ms != null) out.p95_ms = Math.max(out.p95_ms || 0, s.p95_ms);
  }
  const last = tail[tail.length - 1];
  if (last) { out.cpu = last.cpu; out.memory = last.memory; }
  return out;
}

function chart(metric, cohorts, events, t0, t1) {
  const box = el("div", { class: "chart", "data-metric": metric.key });
  box.appendChild(el("h3", {}, metric.title));
  const svg = svgEl("svg", { class: "plot", viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img" });
  svg.appendChild(svgEl("title", {}, metric.title));
  let max = 0;
  for (const samples of Object.values(cohorts)) {
    for (const s of samples) { const v = metric.value(s); if (v != null && v > max) max = v; }
  }
  if (max <= 0) max = metric.key === "error_rate" ? 0.01 : 1;
  max *= 1.1;
  const x = (t) => PAD_L + ((t - t0) / Math.max(1, t1 - t0)) * (W - PAD_L - PAD_R);
  const y = (v) => H - PAD_B - (v / max) * (H - PAD_T - PAD_B);
  svg.appendChild(svgEl("line", { class: "axis", x1: PAD_L, y1: H - PAD_B, x2: W - PAD_R, y2: H - PAD_B }));
  svg.appendChild(svgEl("line", { class: "axis", x1: PAD_L, y1: PAD_T, x2: PAD_L, y2: H - PAD_B }));
  svg.appendChild(svgEl("text", { class: "tick", x: 2, y: PAD_T + 8 }, metric.fmt(max)));
  svg.appendChild(svgEl("text", { class: "tick", x: 2, y: H - PAD_B }, metric.fmt(0)));
  svg.appendChild(svgEl("text", { class: "tick", x: PAD_L, y: H - 4 }, clock(t0)));
  svg.appendChild(svgEl("text", { class: "tick", x: W - PAD_R - 44, y: H - 4 }, clock(t1)));
  for (const [cohort, samples] of Object.entries(cohorts)) {
    // A gap (no value) breaks the line.
    let points = [];
    const flush = () => {
      if (points.length > 0) {
        const p = svgEl("polyline", { class: cohortClass(cohort), "data-cohort": cohort, points: points.join(" ") });
        p.appendChild(svgEl("title", {}, cohort));
        svg.appendChild(p);
      }
      points = [];
    };
    for (const s of samples) {
      const v = metric.value(s);
      if (v == null || s.t_ms < t0) { flush(); continue; }
      points.push(x(s.t_ms).toFixed(1) + "," + y(v).toFixed(1));
    }
    flush();
  }
  let shown = 0;
  for (const e of events) {
    const t = Date.parse(e.ts);
    if (!(t >= t0 && t <= t1)) continue;
    // Labels of events close together are staggered over four rows.
    const row = shown++ % 4;
    const g = svgEl("g", { class: "marker", "data-kind": e.kind, "data-job": e.job_id });
    g.appendChild(svgEl("title", {}, clock(t) + " " + e.label));
    g.appendChild(svgEl("line", { class: "event event-" + e.kind, x1: x(t), y1: PAD_T, x2: x(t), y2: H - PAD_B }));
    g.appendChild(svgEl("text", { class: "event-label", x: x(t) + 2, y: PAD_T + 8 + row * 10 }, e.kind));
    svg.appendChild(g);
  }
  box.appendChild(svg);
  return box;
}

function latestTable(cohorts) {
  const table = el("table", { class: "latest" });
  const head = el("tr");
  for (const h of ["cohort", "responses/s", "error rate", "p95", "CPU", "memory"]) head.appendChild(el("th", {}, h));
  table.appendChild(el("thead")).appendChild(head);
  const body = table.appendChild(el("tbody"));
  for (const [cohort, samples] of Object.entries(cohorts)) {
    const r = recent(samples);
    const row = el("tr", { "data-cohort": cohort });
    row.appendChild(el("td", { class: cohortClass(cohort) }, cohort));
    const rate = r.span_ms > 0 ? (r.responses * 1000) / r.span_ms : 0;
    row.appendChild(el("td", { class: "num" }, rate.toFixed(1)));
    const cells = [
      ["error_rate", r.responses > 0 ? METRICS[0].fmt(r.errors / r.responses) : "no responses"],
      ["p95", r.p95_ms != null ? METRICS[1].fmt(r.p95_ms) : "no responses"],
      ["cpu", r.cpu != null ? METRICS[2].fmt(r.cpu * 100) : "-"],
      ["memory", r.memory != null ? METRICS[3].fmt(r.memory / 1048576) : "-"],
    ];
    for (const [key, text] of cells) row.appendChild(el("td", { class: "num", "data-metric": key }, text));
    body.appendChild(row);
  }
  return table;
}

function eventList(events) {
  const ul = el("ul", { class: "events" });
  for (const e of events.slice(-30).reverse()) {
    const li = el("li", { "data-kind": e.kind, "data-job": e.job_id });
    li.appendChild(el("span", { class: "kind" }, clock(Date.parse(e.ts)) + " " + e.kind));
    li.appendChild(document.createTextNode(e.label));
    ul.appendChild(li);
  }
  return ul;
}

// Per app, the samples read so far: each refresh asks only for those after the newest one.
const cache = {};

async function seriesOf(name) {
  const c = cache[name] || (cache[name] = { cohorts: {}, last: 0 });
  const got = await getJson("/dashboard/api/series?app=" + encodeURIComponent(name) + "&since=" + c.last);
  let newest = c.last;
  for (const [cohort, samples] of Object.entries(got.cohorts || {})) {
    const list = c.cohorts[cohort] || (c.cohorts[cohort] = []);
    for (const s of samples) {
      if (list.length === 0 || s.t_ms > list[list.length - 1].t_ms) list.push(s);
      newest = Math.max(newest, s.t_ms);
    }
  }
  c.last = newest;
  for (const list of Object.values(c.cohorts)) {
    let drop = 0;
    while (drop < list.length && list[drop].t_ms < newest - MAX_RANGE_MS) drop++;
    if (drop > 0) list.splice(0, drop);
  }
  return c.cohorts;
}

function rangeMs() {
  const v = Number(document.getElementById("range").value);
  return v > 0 ? v : 15 * 60 * 1000;
}

async function renderApp(app) {
  const [cohorts, events] = await Promise.all([
    seriesOf(app.name),
    getJson("/dashboard/api/events?app=" + encodeURIComponent(app.name)),
  ]);
  const range = rangeMs();
  const section = el("section", { class: "app", id: "app-" + app.name, "data-app": app.name });
  section.appendChild(el("h2", {}, app.name));
  let status = "release " + (app.current || "none");
  if (app.previous) status += " (previous " + app.previous + ")";
  if (app.strategy) status += ", " + app.strategy;
  if (app.active_job) status += "; job " + app.active_job + " running";
  if (app.rollout) status += ": " + app.rollout;
  section.appendChild(el("p", { class: "status" }, status));
  if (app.notes) {
    // As text, never as markup: the notes are the signer's words, shown as written.
    const notes = el("details", { class: "notes", open: "" });
    notes.appendChild(el("summary", {}, "Release notes of " + (app.current || "the release")));
    notes.appendChild(el("pre", { class: "notes-text" }, app.notes));
    section.appendChild(notes);
  }
  let t1 = 0;
  for (const samples of Object.values(cohorts)) for (const s of samples) t1 = Math.max(t1, s.t_ms);
  if (t1 === 0) t1 = Date.now();
  let t0 = t1;
  for (const samples of Object.values(cohorts)) if (samples.length) t0 = Math.min(t0, samples[0].t_ms);
  t0 = Math.max(t0, t1 - range);
  for (const e of events.events) {
    const t = Date.parse(e.ts);
    if (t < t0 && t >= t1 - range) t0 = t;
  }
  if (t1 - t0 < 20000) t0 = t1 - 20000;
  section.appendChild(latestTable(cohorts));
  const charts = el("div", { class: "charts" });
  for (const m of METRICS) charts.appendChild(chart(m, cohorts, events.events, t0, t1));
  section.appendChild(charts);
  section.appendChild(el("h3", {}, "Deploy events"));
  section.appendChild(eventList(events.events));
  return section;
}

async function renderAudit() {
  const audit = await getJson("/dashboard/api/audit?limit=50");
  const rows = document.getElementById("audit-rows");
  const fresh = [];
  for (const e of audit.entries.slice().reverse()) {
    const tr = el("tr", { "data-seq": e.seq });
    for (const v of [e.seq, e.ts, e.event, e.app, e.job_id, e.step, e.detail || e.reason]) {
      tr.appendChild(el("td", {}, v == null ? "" : String(v)));
    }
    fresh.push(tr);
  }
  rows.replaceChildren(...fresh);
}

async function refresh() {
  try {
    const { apps } = await getJson("/dashboard/api/apps");
    const sections = await Promise.all(apps.map(renderApp));
    const main = document.getElementById("apps");
    main.replaceChildren(...sections);
    if (apps.length === 0) main.appendChild(el("p", { class: "note" }, "No apps configured."));
    await renderAudit();
    document.getElementById("updated").textContent = "updated " + clock(Date.now()) + " UTC";
    document.body.setAttribute("data-ready", "true");
  } catch (err) {
    document.getElementById("updated").textContent = "cannot read the agent: " + err.message;
  }
}

document.getElementById("range").addEventListener("change", refresh);
refresh();
setInterval(refresh, REFRESH_MS);
