// The service dashboard: reads /dashboard/api/* and shows the rollouts (rings, hosts, bake
// time left), the inventory and the service's audit tail. Text goes into the page with
// textContent only, never as markup.
"use strict";

const REFRESH_MS = 2000;

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text != null) e.textContent = text;
  return e;
}

function clock(ms) {
  return ms > 0 ? new Date(ms).toISOString().slice(11, 19) : "never";
}

function secs(ms) {
  return (ms / 1000).toFixed(1) + " s";
}

async function getJson(path) {
  const r = await fetch(path, { cache: "no-store" });
  if (!r.ok) throw new Error(path + ": " + r.status);
  return r.json();
}

function row(cells, attrs) {
  const tr = el("tr", attrs);
  for (const c of cells) tr.appendChild(c instanceof Node ? c : el("td", {}, c == null ? "" : String(c)));
  return tr;
}

// One line per cohort: "stable: 1 inst, 30 req, 0.00% 5xx, p95 <= 5 ms, CPU 1%, 3.3 MiB".
function signalsText(h) {
  if (h.signals_error) return "unavailable: " + h.signals_error;
  if (!h.signals || h.signals.length === 0) return "";
  return h.signals.map((c) => {
    const parts = [c.instances + " inst"];
    if (c.window_ms > 0) {
      parts.push(c.requests + " req");
      parts.push(c.error_rate == null ? "no responses" : (c.error_rate * 100).toFixed(2) + "% 5xx");
      if (c.p95_latency_ms != null) parts.push("p95 <= " + c.p95_latency_ms + " ms");
    }
    parts.push("CPU " + c.cpu_percent.toFixed(0) + "%");
    parts.push((c.memory_bytes / 1048576).toFixed(1) + " MiB");
    return c.cohort + ": " + parts.join(", ");
  }).join("; ");
}

function rolloutSection(r) {
  const s = el("section", { class: "rollout", "data-rollout": r.rollout_id, "data-state": r.state });
  s.appendChild(el("h2", {}, r.rollout_id));
  const p = el("p", { class: "summary" });
  p.appendChild(el("span", { class: "state state-" + r.state, "data-field": "state" }, r.state));
  let text = " " + r.app + " " + r.version + ", ring " + (r.ring + 1) + " of " + r.rings.length;
  if (r.pending_control) text += ", " + r.pending_control + " requested";
  text += "; started by " + r.started_by + "; driven by " + (r.leader || "nobody") + " (epoch " + r.epoch + ")";
  p.appendChild(document.createTextNode(text));
  s.appendChild(p);
  if (r.bake_left_ms > 0) s.appendChild(el("p", { class: "summary", "data-field": "bake_left" }, "bake time left: " + secs(r.bake_left_ms)));
  if (r.reason) s.appendChild(el("p", { class: "note" }, r.reason));
  for (const ring of r.rings) {
    const box = el("div", { class: "ring" + (ring.index === r.ring && !["succeeded", "rolled_back", "halted", "aborted"].includes(r.state) ? " ring-current" : ""), "data-ring": ring.name });
    box.appendChild(el("h3", {}, "ring " + (ring.index + 1) + ": " + ring.name));
    if (ring.hosts.length === 0) {
      box.appendChild(el("p", { class: "note" }, "no host dispatched yet"));
    } else {
      const table = el("table");
      table.appendChild(el("thead")).appendChild(row(["host", "action", "step", "job", "last reported", "updated", "agent", "signals"].map((h) => el("th", {}, h))));
      const body = table.appendChild(el("tbody"));
      for (const h of ring.hosts) {
        const agent = h.reachable == null ? "not in the inventory" : (h.reachable ? "reachable" : "UNREACHABLE") + (h.agent_version ? ", " + h.agent_version : "");
        body.appendChild(row([h.agent_id, h.action, el("td", { class: "step-" + h.step, "data-field": "step" }, h.step), h.job_id, h.reason, clock(h.updated_ms), agent, el("td", { "data-field": "signals" }, signalsText(h))], { "data-host": h.agent_id }));
      }
      box.appendChild(table);
    }
    s.appendChild(box);
  }
  return s;
}

async function refresh() {
  try {
    const [rollouts, agents, flags, audit] = await Promise.all([
      getJson("/dashboard/api/rollouts"),
      getJson("/dashboard/api/agents"),
      getJson("/dashboard/api/flags"),
      getJson("/dashboard/api/audit?limit=50"),
    ]);
    const main = document.getElementById("rollouts");
    main.replaceChildren(...rollouts.rollouts.map(rolloutSection));
    if (rollouts.rollouts.length === 0) main.appendChild(el("p", { class: "note" }, "No rollouts yet."));
    document.getElementById("agent-rows").replaceChildren(...agents.agents.map((a) =>
      row([a.id, a.addr, a.version, a.environment, Object.entries(a.labels).map(([k, v]) => k + "=" + v).join(" "), a.reachable ? "yes" : "NO: " + a.error, clock(a.last_seen_ms)], { "data-agent": a.id })));
    document.getElementById("flag-rows").replaceChildren(...flags.flags.flatMap((f) =>
      f.deliveries.map((d) => row([f.app, "v" + f.version, f.published_by, d.agent_id,
        el("td", { class: "flag-" + d.state, "data-field": "state" }, d.state), d.attempts, d.detail || "-"],
        { "data-flag-app": f.app, "data-flag-agent": d.agent_id }))));
    document.getElementById("audit-rows").replaceChildren(...audit.entries.slice().reverse().map((e) =>
      row([e.seq, e.ts, e.event, e.rollout, e.ring, e.agent_id, e.job, e.reason || e.by || e.name], { "data-seq": e.seq })));
    document.getElementById("updated").textContent = "updated " + clock(Date.now()) + " UTC";
    document.body.setAttribute("data-ready", "true");
  } catch (err) {
    document.getElementById("updated").textContent = "cannot read the service: " + err.message;
  }
}

refresh();
setInterval(refresh, REFRESH_MS);
