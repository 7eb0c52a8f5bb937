// wrangle dashboard: reads only the public HTTP API and the event stream.
"use strict";

const $ = (id) => document.getElementById(id);
// With a token set, the page logs in once (POST /login) and the server keeps the token in
// an HttpOnly cookie: it never appears in a URL, and this script never stores it.
let selected = null;
const series = { depth: [], rate: [] };
const HISTORY = 300;
let lastCompleted = null;
let lastTick = null;

// Where the API is: the page's <base>, which the server sets to where the router is
// mounted (`/`, or `/wrangle/` in an application that nests it there).
const BASE = new URL(".", document.baseURI).pathname.replace(/\/$/, "");

async function api(path, options = {}) {
  const headers = Object.assign({ "content-type": "application/json" }, options.headers || {});
  const res = await fetch(BASE + path, Object.assign({ credentials: "same-origin" }, options, { headers }));
  if (res.status === 401) {
    $("token-form").hidden = false;
    setConn("log in", "bad");
    throw new Error("unauthorized");
  }
  const text = await res.text();
  const body = text ? JSON.parse(text) : null;
  if (!res.ok) {
    const e = body && body.error;
    throw new Error(e ? (e.field ? e.field + ": " : "") + e.message : res.statusText);
  }
  return body;
}

function setConn(text, cls) {
  const el = $("conn");
  el.textContent = text;
  el.className = "pill " + (cls || "");
}

function fmtNum(n) {
  if (n === null || n === undefined) return "–";
  if (n >= 10000) return (n / 1000).toFixed(n >= 100000 ? 0 : 1) + "k";
  return n < 10 && !Number.isInteger(n) ? n.toFixed(1) : String(Math.round(n));
}

// A length of time in ms, short: 42s, 7m, 1.5h.
function fmtSpan(ms) {
  const s = Math.max(0, ms / 1000);
  if (s < 60) return s.toFixed(0) + "s";
  if (s < 3600) return (s / 60).toFixed(0) + "m";
  return (s / 3600).toFixed(1) + "h";
}

// How long ago the Unix time `ms` was.
function age(ms) {
  return fmtSpan(Date.now() - ms);
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

function drawChart(canvas, values, color) {
  const ratio = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight || 140;
  canvas.width = w * ratio;
  canvas.height = h * ratio;
  const g = canvas.getContext("2d");
  g.scale(ratio, ratio);
  g.clearRect(0, 0, w, h);
  const max = Math.max(1, ...values);
  g.strokeStyle = "#e3e6ec";
  g.fillStyle = "#6b7385";
  g.font = "11px system-ui";
  g.textBaseline = "bottom";
  for (let i = 0; i <= 2; i++) {
    const y = 14 + (h - 26) * (i / 2);
    g.beginPath(); g.moveTo(0, y); g.lineTo(w, y); g.stroke();
    g.fillText(fmtNum(max * (1 - i / 2)), 4, y - 1);
  }
  if (values.length < 2) return;
  g.strokeStyle = color;
  g.lineWidth = 2;
  g.beginPath();
  values.forEach((v, i) => {
    const x = (i / (HISTORY - 1)) * w + (HISTORY - values.length) * (w / (HISTORY - 1));
    const y = 14 + (h - 26) * (1 - v / max);
    if (i === 0) g.moveTo(x, y); else g.lineTo(x, y);
  });
  g.stroke();
}

function push(series, v) {
  series.push(v);
  if (series.length > HISTORY) series.shift();
}

async function refreshStats() {
  const s = await api("/stats");
  setConn("live", "ok");
  const q = s.queue;
  $("c-queued").textContent = fmtNum(q.queue_size);
  // Load shedding: new low (and maybe normal) tasks are refused while the backlog is high.
  const shedding = $("c-shedding");
  shedding.hidden = !q.shedding;
  shedding.textContent = "shedding " + (q.shedding_up_to === "normal" ? "low, normal" : "low");
  shedding.title = `refused so far: low ${q.shed.low}, normal ${q.shed.normal}`;
  $("c-running").textContent = fmtNum(q.running);
  $("c-completed").textContent = fmtNum(q.completed);
  $("c-failed").textContent = fmtNum(q.failed + q.timed_out);
  $("c-dead").textContent = fmtNum(q.dead_lettered);
  $("c-unroutable").textContent = fmtNum(q.unroutable);
  $("c-workers").textContent = s.workers.worker_count + " / " + s.workers.max_workers;
  $("uptime").textContent = "up " + age(Date.now() - s.uptime_secs * 1000);
  $("restarts").textContent = `restarts: workers ${s.workers.restarts}, pools ${s.pool_restarts}, gate ${s.gate_restarts}`;
  const st = s.store;
  const role = st && st.role !== "single" ? ` (${st.role}, epoch ${st.epoch})` : "";
  $("store").textContent = st
    ? "store: " + st.url + role + (st.healthy ? "" : " (unavailable: submits refused)")
    : "store: none (memory only)";
  $("store").className = st && !st.healthy ? "pill bad" : "muted";
  const now = performance.now();
  if (lastCompleted !== null) {
    const rate = ((q.completed - lastCompleted) * 1000) / Math.max(1, now - lastTick);
    $("c-rate").textContent = fmtNum(rate) + "/s";
    push(series.rate, rate);
  }
  lastCompleted = q.completed;
  lastTick = now;
  push(series.depth, q.queue_size);
  drawChart($("chart-depth"), series.depth, "#3b6cf6");
  drawChart($("chart-rate"), series.rate, "#1f9d55");
  const scale = $("scale-input");
  scale.min = s.workers.min_workers;
  scale.max = s.workers.max_workers;
  if (document.activeElement !== scale) scale.value = s.workers.worker_count - s.workers.draining;
}

async function refreshWorkers() {
  const [workers, nodes] = await Promise.all([api("/workers"), api("/nodes")]);
  const body = $("workers").tBodies[0];
  body.replaceChildren(...workers.map((w) => {
    const tr = el("tr");
    tr.append(el("td", w.id), statusCell(w.status),
      el("td", w.current_tasks + " / " + w.max_concurrent_tasks),
      el("td", fmtNum(w.total_completed)), el("td", fmtNum(w.total_failed)),
      el("td", String(w.restarts)), el("td", String(w.mailbox_depth)),
      el("td", (w.labels || []).join(", ")));
    return tr;
  }));
  $("nodes").tBodies[0].replaceChildren(...nodes.map((n) => {
    const tr = el("tr");
    tr.dataset.node = n.id;
    tr.dataset.status = n.status;
    const status = statusCell(n.status);
    if (n.lost_reason) status.append(el("span", " " + n.lost_reason, "muted"));
    tr.append(el("td", n.role === "coordinator" ? n.id + " (coordinator)" : n.id), status,
      el("td", n.status === "online" ? n.running + " / " + n.capacity : "–"),
      el("td", String(n.workers)),
      el("td", n.role === "coordinator" ? "–" : age(Date.now() - n.silent_ms) + " ago"),
      el("td", (n.labels || []).join(", ")), el("td", n.task_types.join(", ")));
    return tr;
  }));
  const select = $("submit-type");
  const online = nodes.filter((n) => n.status === "online");
  const types = [...new Set(online.flatMap((n) => n.task_types))];
  if (select.options.length !== types.length) {
    select.replaceChildren(...types.map((t) => el("option", t)));
    if (types.includes("sleep")) select.value = "sleep";
  }
}

// External compute nodes, next to the wrangle nodes. Listing them needs the `admin` scope:
// without it (403) or without a compute cluster, the table stays hidden.
async function refreshCompute() {
  let nodes;
  try {
    nodes = await api("/compute/nodes");
  } catch (err) {
    $("compute-panel").hidden = true;
    return;
  }
  $("compute-panel").hidden = nodes.length === 0;
  $("compute").tBodies[0].replaceChildren(...nodes.map((n) => {
    const tr = el("tr");
    tr.dataset.node = n.id;
    const health = n.draining ? "draining" : n.health.healthy ? "healthy" : "unhealthy";
    const status = statusCell(health);
    if (n.health.reason) status.append(el("span", " " + n.health.reason, "muted"));
    tr.append(el("td", n.id), el("td", n.backend + " " + n.endpoint), status, breakerCell(n.breaker),
      el("td", n.in_flight + " / " + n.max_concurrent), el("td", String(n.waiting)),
      el("td", fmtNum(n.requests)), el("td", fmtNum(n.failures)),
      el("td", Object.entries(n.labels).map(([k, v]) => k + "=" + v).join(", ")));
    return tr;
  }));
}

// Failover on PostgreSQL: the coordinators sharing the database (the leader and its
// standbys) and the last takeover. Hidden for a single coordinator.
async function refreshFailover() {
  const f = await api("/failover");
  $("failover-panel").hidden = f.role === "single";
  if (f.role === "single") return;
  const takeover = f.last_takeover_ago_ms == null ? "none yet"
    : age(Date.now() - f.last_takeover_ago_ms) + " ago" + (f.previous_leader ? " (from " + f.previous_leader + ")" : "");
  const down = f.stepped_down ? "; this coordinator stepped down " + age(Date.now() - f.stepped_down.ago_ms) + " ago: " + f.stepped_down.reason : "";
  $("failover-summary").textContent = `leader ${f.leader || "none"} (epoch ${f.epoch}); last takeover ${takeover}${down}`;
  $("coordinators").tBodies[0].replaceChildren(...f.coordinators.map((c) => {
    const tr = el("tr");
    tr.dataset.coordinator = c.name;
    const name = c.name === f.name ? c.name + " (this one)" : c.name;
    tr.append(el("td", name), statusCell(c.role), el("td", c.url || "–"),
      el("td", age(Date.now() - c.seen_ago_ms) + " ago"));
    return tr;
  }));
}

// A compute node's circuit breaker as a badge: closed, open (with the cool-down left, or
// waiting for a passing health check) or half-open (a probe decides); the tooltip says why.
function breakerCell(b) {
  const td = el("td");
  let text = b.state === "half_open" ? "half-open" : b.state;
  if (b.state === "open") {
    if (b.waiting_for_check) text += " until a check passes";
    else if (b.retry_at) text += " " + fmtSpan(b.retry_at - Date.now());
  }
  const badge = el("span", text, "status breaker-" + b.state);
  badge.title = [
    b.reason,
    b.window_requests ? Math.round(b.failure_rate * 100) + "% of " + b.window_requests + " recent requests failed" : "",
    b.trips + " trips, " + b.rejected + " requests refused",
  ].filter(Boolean).join("; ");
  td.append(badge);
  return td;
}

function statusCell(status) {
  const td = el("td");
  td.append(el("span", status, "status " + status));
  return td;
}

async function refreshTasks() {
  const status = $("status-filter").value;
  const page = await api("/tasks?order=desc&limit=200" + (status ? "&status=" + status : ""));
  const tasks = page.tasks;
  const body = $("task-list").tBodies[0];
  body.replaceChildren(...tasks.map((t) => {
    const tr = el("tr");
    tr.dataset.id = t.id;
    tr.dataset.status = t.status;
    if (t.id === selected) tr.className = "selected";
    tr.append(el("td", t.id.slice(-12)), el("td", t.task_type), statusCell(t.status + (t.unroutable ? " (unroutable)" : "")),
      el("td", t.options.priority), el("td", String(t.attempts.length)), el("td", age(t.created_at_ms)));
    tr.onclick = () => { selected = t.id; showDetail(); refreshTasks(); };
    return tr;
  }));
  if (selected) showDetail();
}

async function showDetail() {
  let t;
  try { t = await api("/tasks/" + selected); } catch (e) { return; }
  $("detail-empty").hidden = true;
  $("detail-body").hidden = false;
  $("d-id").textContent = t.id;
  const st = $("d-status");
  st.textContent = t.status;
  st.className = "status " + t.status;
  $("d-payload").textContent = JSON.stringify(t.payload, null, 2);
  $("d-result").textContent = t.result !== null && t.result !== undefined
    ? JSON.stringify(t.result, null, 2) : (t.error || "–");
  $("d-attempts").replaceChildren(...t.attempts.map((a) => el("li",
    `#${a.number} on ${a.worker}: ${a.outcome || "running"}` +
    (a.finished_at_ms ? ` in ${a.finished_at_ms - a.started_at_ms} ms` : "") + (a.error ? ` (${a.error})` : ""))));
  const finished = ["completed", "failed", "cancelled", "timeout"].includes(t.status);
  $("d-cancel").disabled = finished;
  $("d-requeue").disabled = !["failed", "timeout"].includes(t.status);
}

function logEvent(list, text, keep) {
  const li = el("li", text);
  list.prepend(li);
  while (list.children.length > keep) list.lastChild.remove();
}

// Every number the decision was made from: what caused it (reason) and, per place where work
// waits, the raw count and the count per worker that the thresholds were compared with.
function describeDecision(d) {
  const s = d.signals, p = d.pressure;
  return `${new Date(d.at_ms).toLocaleTimeString()} ${d.pool}: ${d.from} → ${d.to} workers (${d.reason}; ` +
    `${d.pressure_per_worker.toFixed(1)} waiting/worker; ` +
    `backlog ${s.backlog} (${p.backlog.toFixed(1)}/worker), ` +
    `worker mailboxes ${s.worker_mailbox} (${p.worker_mailbox.toFixed(1)}/worker), ` +
    `node mailboxes ${s.remote_mailbox} (${p.node_mailbox.toFixed(1)}/worker), ` +
    `queue mailbox ${s.queue_mailbox}, pool mailbox ${s.pool_mailbox} (${p.coordinator_mailbox.toFixed(1)}/worker), ` +
    `busy ${s.busy_slots}/${s.total_slots}, workers ${s.workers} + ${s.remote_workers} remote)`;
}

// A node group's decision or outcome (a `ScalingEvent`): what happened to which node, why,
// and the group's numbers at the time.
function describeNodeEvent(e) {
  return `${new Date(e.at_ms).toLocaleTimeString()} ${e.group}: ${e.action}${e.node ? " " + e.node : ""} ` +
    `(${e.reason}; ${e.waiting} waiting, ${e.nodes} node(s)` +
    (e.in_flight ? `, ${e.in_flight} in flight` : "") + ")" + (e.error ? ": " + e.error : "");
}

// One entry of the decisions list, marked `pool` or `node` (the `kind` of /scale/history).
function decisionItem(kind, d) {
  const li = el("li");
  li.dataset.kind = kind;
  li.append(el("span", kind, "tag " + kind), " " + (kind === "node" ? describeNodeEvent(d) : describeDecision(d)));
  return li;
}

function logDecision(kind, d) {
  const list = $("decisions");
  list.prepend(decisionItem(kind, d));
  while (list.children.length > 100) list.lastChild.remove();
}

// The pool's and the node groups' decisions, newest first.
async function loadDecisions() {
  const decisions = await api("/scale/history");
  $("decisions").replaceChildren(...decisions.slice(-100).reverse().map((d) => decisionItem(d.kind, d)));
}

// A refresh of the node groups a moment after their events, once for a burst of them.
let nodeGroupsPending = false;
function refreshNodeGroupsSoon() {
  if (nodeGroupsPending) return;
  nodeGroupsPending = true;
  setTimeout(() => { nodeGroupsPending = false; refreshNodeGroups().catch(() => {}); }, 250);
}

const NODE_STATES = ["launching", "joining", "running", "draining", "stopping"];

// The node groups the coordinator launches nodes for: their nodes by state, bounds, backoff,
// last error and counters. Without node groups the panel says so.
async function refreshNodeGroups() {
  const view = await api("/scale/groups");
  const groups = view.groups;
  $("node-groups-empty").hidden = groups.length !== 0;
  $("node-groups-table").hidden = groups.length === 0;
  $("node-groups").tBodies[0].replaceChildren(...groups.map((g) => {
    const tr = el("tr");
    tr.dataset.group = g.name;
    const states = el("td");
    NODE_STATES.forEach((state) => {
      const n = g.members.filter((m) => m.state === state).length;
      if (n > 0) states.append(el("span", n + " " + state, "status " + state), " ");
    });
    if (g.members.length === 0) states.append(el("span", "none", "muted"));
    states.title = g.members.map((m) => `${m.node}: ${m.state} for ${fmtSpan(m.in_state_ms)}` +
      (m.resource ? ` (${m.resource})` : "")).join("\n");
    const backoff = g.backoff_ms > 0
      ? `${fmtSpan(g.backoff_ms)} (${g.failures} failed in a row)`
      : (g.failures > 0 ? `${g.failures} failed in a row` : "–");
    const error = el("td", g.last_error || "–", g.last_error ? "error" : "muted");
    if (g.last_error) error.title = g.last_error;
    const c = g.counts;
    const meanDrain = c.drained > 0 ? `, mean ${fmtSpan(c.drain_ms / c.drained)}` : "";
    const counters = `launched ${c.launches}, failed ${c.launch_failures} (never joined ${c.never_joined}), ` +
      `drains ${c.drains} (undone ${c.undrains}, ended ${c.drained}${meanDrain}), ` +
      `terminated ${c.terminations}, lost ${c.lost}`;
    tr.append(el("td", g.name), el("td", g.launcher), states,
      el("td", g.min_nodes + " / " + g.max_nodes), el("td", fmtNum(g.waiting)),
      el("td", backoff), error, el("td", counters, "counters"));
    return tr;
  }));
}

// The page's one event stream, shared by every view: other scripts (workflows.js) ask for
// the event kinds they need with `onServerEvents`, before or after the stream opens.
let eventSource = null;
const eventHandlers = [];

function listen(source, kinds, fn) {
  kinds.forEach((k) => source.addEventListener(k, (e) => fn(e.type, JSON.parse(e.data))));
}

function onServerEvents(kinds, fn) {
  eventHandlers.push({ kinds, fn });
  if (eventSource) listen(eventSource, kinds, fn);
}

function connectEvents() {
  const source = new EventSource(BASE + "/events");
  eventSource = source;
  eventHandlers.forEach((h) => listen(source, h.kinds, h.fn));
  const events = $("events");
  let pending = false;
  const onEvent = (e) => {
    const data = JSON.parse(e.data);
    if (e.type === "scaled") logDecision("pool", data);
    if (e.type === "node_scaling") {
      logDecision("node", data);
      refreshNodeGroupsSoon();
    }
    if (e.type !== "task_started" && e.type !== "task_submitted" && e.type !== "task_progress") {
      const id = data.id ? " " + String(data.id).slice(-12) : "";
      const who = data.worker ? " on " + data.worker : "";
      logEvent(events, `${new Date(data.at_ms || Date.now()).toLocaleTimeString()} ${e.type}${id}${who}` +
        (data.error ? ": " + data.error : "") + (data.reason ? ": " + data.reason : ""), 60);
    }
    if (!pending && e.type.startsWith("task_")) {
      pending = true;
      setTimeout(() => { pending = false; refreshTasks().catch(() => {}); }, 250);
    }
  };
  ["task_submitted", "task_started", "task_progress", "task_completed", "task_retried", "task_dead_lettered",
    "task_cancelled", "task_requeued", "lease_lost", "worker_started", "worker_stopped", "worker_restarted",
    "worker_unresponsive", "pool_failed", "scaled", "node_scaling", "lagged"].forEach((k) => source.addEventListener(k, onEvent));
  source.onerror = () => setConn("reconnecting", "bad");
}

$("submit-form").onsubmit = async (e) => {
  e.preventDefault();
  const out = $("submit-result");
  try {
    const payload = JSON.parse($("submit-payload").value || "null");
    const res = await api("/tasks", {
      method: "POST",
      body: JSON.stringify({ task_type: $("submit-type").value, payload, priority: $("submit-priority").value }),
    });
    selected = res.tasks[0].id;
    window.__selectedId = selected;
    out.textContent = "submitted " + selected.slice(-12);
    await refreshTasks();
  } catch (err) {
    out.textContent = err instanceof SyntaxError ? "payload is not valid JSON" : err.message;
  }
};

$("scale-form").onsubmit = async (e) => {
  e.preventDefault();
  const out = $("scale-result");
  try {
    const d = await api("/scale", { method: "POST", body: JSON.stringify({ workers: Number($("scale-input").value) }) });
    out.textContent = `${d.from} → ${d.to}`;
  } catch (err) {
    out.textContent = err.message;
  }
};

$("d-cancel").onclick = async () => {
  try { await api("/tasks/" + selected, { method: "DELETE" }); } catch (err) { alert(err.message); }
  refreshTasks();
};
$("d-requeue").onclick = async () => {
  try { await api("/tasks/" + selected + "/requeue", { method: "POST" }); } catch (err) { alert(err.message); }
  refreshTasks();
};
$("status-filter").onchange = () => refreshTasks();
$("token-form").onsubmit = async (e) => {
  e.preventDefault();
  const res = await fetch(BASE + "/login", {
    method: "POST",
    credentials: "same-origin",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ token: $("token").value }),
  });
  $("token").value = "";
  if (res.ok) {
    location.reload();
  } else {
    setConn(res.status === 401 ? "wrong token" : "login failed", "bad");
  }
};

async function tick() {
  try {
    await refreshStats();
    await refreshWorkers();
    await refreshCompute();
    await refreshFailover();
  } catch (err) {
    console.error("dashboard refresh failed:", err);
    if (err.message !== "unauthorized") setConn("offline", "bad");
  }
}

(async function start() {
  await tick();
  try { await refreshTasks(); await loadDecisions(); await refreshNodeGroups(); } catch (err) { /* shown by tick */ }
  connectEvents();
  setInterval(tick, 1000);
  setInterval(() => refreshTasks().catch(() => {}), 3000);
  setInterval(() => refreshNodeGroups().catch(() => {}), 2000);
})();
