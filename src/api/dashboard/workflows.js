// wrangle dashboard, workflows view: the registered workflows, a form that starts a run, one
// page of runs (newest first) and the selected run's detail with the actions its status
// allows. Loaded after app.js, whose helpers it uses ($, api, el, age, fmtSpan, statusCell,
// logEvent, onServerEvents). API data is only ever inserted as text, never as HTML.
"use strict";

// One page of runs per read, never more: snapshots carry their state, so pages stay small
// even when there are 10,000 runs.
const WF_PAGE = 100;
// Workflow events ask for a re-read; those arriving within this many ms share one.
const WF_THROTTLE_MS = 500;
// Without events the view re-reads this often, so a missed event is caught up.
const WF_POLL_MS = 5000;
// The statuses each action is valid in: a button shows only for these.
const WF_ACTIONS = {
  pause: ["running"],
  resume: ["paused"],
  cancel: ["running", "paused"],
  retry: ["failed", "stopped"],
};
// At most this many running step names in a row of the runs table.
const WF_ROW_STEPS = 3;

const wf = {
  selected: null, // the id of the run shown in the detail pane
  detail: null, // the newest snapshot of that run
  timer: null, // a scheduled re-read
  busy: false, // a re-read in flight
  again: false, // something changed while it was in flight: read once more after it
  stale: false, // something changed while the page was hidden
  names: "", // the workflow names offered in the start form, to re-render only on change
};

// Sets an element's text, leaving it alone (and its scroll position) when unchanged.
function setText(id, text) {
  const e = $(id);
  if (e.textContent !== text) e.textContent = text;
}

// Of two snapshots of one run, the newer (a read begun before an action may answer after it).
function newer(a, b) {
  if (!a || a.id !== b.id) return b;
  return b.updated_at_ms >= a.updated_at_ms ? b : a;
}

function runningSummary(r) {
  const keys = Object.keys(r.steps_running);
  if (keys.length === 0) return "–";
  const shown = keys.slice(0, WF_ROW_STEPS).join(", ");
  return keys.length > WF_ROW_STEPS ? `${shown} +${keys.length - WF_ROW_STEPS}` : shown;
}

function runAge(r) {
  const took = r.finished_at_ms ? ", took " + fmtSpan(r.finished_at_ms - r.created_at_ms) : "";
  return age(r.created_at_ms) + took;
}

// Steps completed out of those known so far (a map's list, a loop's turn or a dynamic
// step's additions can raise the total).
function stepsOf(r) {
  return r.steps_total > r.steps_completed ? `${r.steps_completed} / ${r.steps_total}` : String(r.steps_completed);
}

// Fills a row of the runs table; the row itself stays, so a click is never lost to a re-read.
function fillRow(tr, r) {
  tr.dataset.status = r.status;
  tr.className = r.id === wf.selected ? "selected" : "";
  const error = el("td", r.error || "", "error");
  if (r.error) error.title = r.error;
  const running = el("td", runningSummary(r), "running-steps");
  tr.replaceChildren(el("td", r.id.slice(-12)), el("td", r.workflow), statusCell(r.status), running,
    el("td", stepsOf(r)), el("td", runAge(r)), error);
}

function renderRuns(runs) {
  const body = $("wf-runs").tBodies[0];
  const old = new Map([...body.rows].map((tr) => [tr.dataset.id, tr]));
  const rows = runs.map((r) => {
    let tr = old.get(r.id);
    if (!tr) {
      tr = el("tr");
      tr.dataset.id = r.id;
      tr.onclick = () => selectRun(r.id);
    }
    fillRow(tr, r.id === wf.selected ? newer(r, wf.detail) : r);
    return tr;
  });
  const same = rows.length === body.rows.length && rows.every((tr, i) => body.rows[i] === tr);
  if (!same) body.replaceChildren(...rows);
  setText("wf-count", runs.length >= WF_PAGE ? `newest ${WF_PAGE}` : `${runs.length}`);
}

// The detail's clock: how long the run and its running steps have been going.
function renderClock() {
  const r = wf.detail;
  if (!r) return;
  setText("wf-d-took", r.finished_at_ms ? fmtSpan(r.finished_at_ms - r.created_at_ms)
    : fmtSpan(Date.now() - r.created_at_ms) + " so far");
  const steps = Object.entries(r.steps_running);
  $("wf-d-running").replaceChildren(...(steps.length === 0 ? [el("li", "none", "muted")]
    : steps.map(([key, started]) => {
      const li = el("li", `${key}: running for ${fmtSpan(Date.now() - started)}`);
      li.dataset.step = key;
      return li;
    })));
}

function renderDetail() {
  const r = wf.detail;
  $("wf-detail-empty").hidden = r !== null;
  $("wf-detail-body").hidden = r === null;
  if (!r) return;
  setText("wf-d-id", r.id);
  const st = $("wf-d-status");
  setText("wf-d-status", r.status);
  st.className = "status " + r.status;
  setText("wf-d-workflow", r.workflow);
  setText("wf-d-version", r.version);
  setText("wf-d-steps", stepsOf(r));
  setText("wf-d-retries", String(r.retries));
  setText("wf-d-checkpoint", r.checkpoint || "–");
  setText("wf-d-started", new Date(r.created_at_ms).toLocaleString());
  setText("wf-d-deadline", r.deadline_ms ? new Date(r.deadline_ms).toLocaleString() : "none");
  for (const [action, statuses] of Object.entries(WF_ACTIONS)) {
    $("wf-" + action).hidden = !statuses.includes(r.status);
  }
  setText("wf-d-error", r.error || "–");
  setText("wf-d-state", JSON.stringify(r.state, null, 2));
  renderClock();
}

function selectRun(id) {
  if (wf.selected !== id) setText("wf-action-result", "");
  wf.selected = id;
  wf.detail = null;
  for (const tr of $("wf-runs").tBodies[0].rows) tr.className = tr.dataset.id === id ? "selected" : "";
  renderDetail();
  refreshRuns().catch(() => {});
}

// Reads one page of runs and, when the selected run is not on it, that run.
async function refreshRuns() {
  if (document.hidden) {
    wf.stale = true;
    return;
  }
  if (wf.busy) {
    wf.again = true;
    return;
  }
  wf.busy = true;
  try {
    const status = $("wf-filter").value;
    const runs = await api(`/workflows/runs?limit=${WF_PAGE}` + (status ? "&status=" + encodeURIComponent(status) : ""));
    const id = wf.selected;
    if (id) {
      const listed = runs.find((r) => r.id === id);
      // A run that cannot be read now (gone, or the store down) keeps its last snapshot.
      const run = listed || await api("/workflows/runs/" + encodeURIComponent(id)).catch(() => null);
      if (run && wf.selected === id) wf.detail = newer(wf.detail, run);
    }
    renderRuns(runs);
    renderDetail();
  } finally {
    wf.busy = false;
    if (wf.again) {
      wf.again = false;
      scheduleRefresh();
    }
  }
}

// Asks for a re-read within WF_THROTTLE_MS; asks made meanwhile share it.
function scheduleRefresh() {
  if (wf.timer !== null) return;
  wf.timer = setTimeout(() => {
    wf.timer = null;
    refreshRuns().catch((err) => console.error("workflow runs refresh failed:", err));
  }, WF_THROTTLE_MS);
}

async function refreshDefinitions() {
  const defs = await api("/workflows");
  $("wf-defs-empty").hidden = defs.length > 0;
  $("wf-defs").tBodies[0].replaceChildren(...defs.map((d) => {
    const tr = el("tr");
    tr.dataset.name = d.name;
    const version = el("td");
    version.append(el("code", d.version.length > 16 ? d.version.slice(0, 16) + "…" : d.version));
    version.title = d.version;
    const steps = (d.definition.steps || []).map((s) => s.name).join(" → ");
    // When a step's outcome is committed: before the next step starts (the default), or
    // while it runs.
    const checkpoint = d.definition.checkpoint === "overlapped" ? "overlapped" : "before next step";
    tr.append(el("td", d.name), version, el("td", checkpoint, "checkpoint"), el("td", steps));
    tr.onclick = () => { $("wf-start-name").value = d.name; };
    return tr;
  }));
  const names = defs.map((d) => d.name);
  if (names.join("\n") !== wf.names) {
    const select = $("wf-start-name");
    const chosen = select.value;
    select.replaceChildren(...names.map((n) => el("option", n)));
    if (names.includes(chosen)) select.value = chosen;
    wf.names = names.join("\n");
  }
}

async function runAction(action) {
  const id = wf.selected;
  if (!id) return;
  setText("wf-action-result", "");
  try {
    const run = await api(`/workflows/runs/${encodeURIComponent(id)}/${action}`, { method: "POST" });
    if (wf.selected === id) {
      wf.detail = newer(wf.detail, run);
      renderDetail();
    }
  } catch (err) {
    if (wf.selected === id) setText("wf-action-result", `${action} refused: ${err.message}`);
  }
  scheduleRefresh();
}

$("wf-start-form").onsubmit = async (e) => {
  e.preventDefault();
  const out = $("wf-start-result");
  const name = $("wf-start-name").value;
  if (!name) {
    out.textContent = "no workflow is registered";
    return;
  }
  let input;
  try {
    input = JSON.parse($("wf-start-input").value.trim() || "{}");
  } catch (err) {
    out.textContent = "input is not valid JSON: " + err.message;
    return;
  }
  try {
    // The run's own options, if any, go in the query; the API checks them.
    const query = new URLSearchParams();
    const checkpoint = $("wf-start-checkpoint").value;
    const timeout = $("wf-start-timeout").value.trim();
    if (checkpoint) query.set("checkpoint", checkpoint);
    if (timeout) query.set("timeout", timeout);
    const options = query.toString() ? "?" + query : "";
    const run = await api("/workflows/" + encodeURIComponent(name) + "/runs" + options,
      { method: "POST", body: JSON.stringify(input) });
    out.textContent = "started " + run.id.slice(-12);
    window.__wfStarted = run.id;
    setText("wf-action-result", "");
    wf.selected = run.id;
    wf.detail = run;
    renderDetail();
    scheduleRefresh();
  } catch (err) {
    out.textContent = err.message;
  }
};

for (const action of Object.keys(WF_ACTIONS)) {
  $("wf-" + action).onclick = () => runAction(action);
}
$("wf-filter").onchange = () => refreshRuns().catch(() => {});

onServerEvents(["workflow_run", "workflow_step", "lagged"], (kind, data) => {
  if (kind === "workflow_run") {
    logEvent($("events"), `${new Date(data.at_ms || Date.now()).toLocaleTimeString()} workflow_run ` +
      `${data.workflow} ${String(data.run).slice(-12)} ${data.status}` + (data.error ? ": " + data.error : ""), 60);
  }
  scheduleRefresh();
});

document.addEventListener("visibilitychange", () => {
  if (!document.hidden && wf.stale) {
    wf.stale = false;
    scheduleRefresh();
  }
});

(function startWorkflows() {
  const poll = () => {
    refreshDefinitions().catch(() => {});
    refreshRuns().catch(() => {});
  };
  poll();
  setInterval(poll, WF_POLL_MS);
  setInterval(renderClock, 1000);
})();
