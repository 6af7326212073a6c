// kiln jobs page: start, follow, compare and cancel `mlflow run` jobs; promote registered models.
// Talks only to this service's /api; charts use the vendored uPlot (static/vendor/uplot).
"use strict";

const COLORS = ["#d9480f", "#1c7ed6", "#2b8a3e", "#7048e8", "#e8590c", "#0c8599", "#c2255c", "#5c940d", "#862e9c", "#495057"];
const EPOCH_STEPS = [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000, 10000];
const FINISHED = new Set(["completed", "failed", "cancelled"]);
const state = {
  config: null,
  entryPoints: {},
  jobs: [],
  selectedJob: null,
  jobTimer: null,
  logAbort: null,
  charts: new Map(),
  runs: [],
  compareSelected: new Set(),
  compareCurves: new Map(),
  compareChart: null,
  frontierCharts: [],
};

// ---- small helpers ------------------------------------------------------------------------------------
function $(sel) { return document.querySelector(sel); }

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function fmtNum(v) {
  if (v === null || v === undefined) return "–";
  if (Number.isInteger(v)) return String(v);
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e5) ? v.toExponential(3) : v.toPrecision(4);
}

function fmtTick(v) {
  if (v === 0) return "0";
  const a = Math.abs(v);
  return a < 1e-3 || a >= 1e5 ? v.toExponential(1) : String(Number(v.toPrecision(3)));
}

function ago(iso) {
  if (!iso) return "";
  const s = (Date.now() - Date.parse(iso)) / 1000;
  if (s < 60) return `${Math.max(0, Math.round(s))}s ago`;
  if (s < 3600) return `${Math.round(s / 60)}m ago`;
  if (s < 86400) return `${Math.round(s / 3600)}h ago`;
  return new Date(iso).toLocaleDateString();
}

function duration(sec) {
  if (sec === null || sec === undefined) return "–";
  const m = Math.floor(sec / 60), s = Math.round(sec % 60);
  return m >= 60 ? `${Math.floor(m / 60)}h ${m % 60}m` : m ? `${m}m ${s}s` : `${s}s`;
}

function banner(text) {
  const el = $("#banner");
  el.hidden = !text;
  el.textContent = text || "";
}

// ---- API ----------------------------------------------------------------------------------------------
function authHeaders() {
  const token = localStorage.getItem("kiln-token");
  return token ? { Authorization: `Bearer ${token}` } : {};
}

class ApiError extends Error {
  constructor(status, body) {
    super(body && body.detail ? body.detail : `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
  }
}

async function api(path, options = {}) {
  const init = { ...options, headers: { ...authHeaders(), ...(options.headers || {}) } };
  if (options.json !== undefined) {
    init.method = init.method || "POST";
    init.body = JSON.stringify(options.json);
    init.headers["Content-Type"] = "application/json";
  }
  const res = await fetch(path, init);
  const text = await res.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = { detail: text }; }
  if (res.status === 401) askToken(body && body.detail);
  if (!res.ok) throw new ApiError(res.status, body);
  return body;
}

function askToken(reason) {
  const dlg = $("#token-dialog");
  if (dlg.open) return;
  if (reason) banner(`Not authorised: ${reason}`);
  $("#token-input").value = "";
  dlg.showModal();
}

// ---- tabs ---------------------------------------------------------------------------------------------
function showTab(name) {
  document.querySelectorAll(".tab").forEach((b) => b.classList.toggle("active", b.dataset.tab === name));
  document.querySelectorAll(".tab-panel").forEach((p) => { p.hidden = p.id !== `tab-${name}`; });
  if (name === "compare") { loadRuns(); loadFrontier(); }
  if (name === "models") loadModels();
  if (location.hash !== `#${name}`) history.replaceState(null, "", `#${name}`);
}

// ---- start form ---------------------------------------------------------------------------------------
async function loadEntryPoints() {
  const data = await api("/api/entry-points");
  state.entryPoints = Object.fromEntries(data.entry_points.map((e) => [e.name, e]));
  const select = $("#entry-point");
  select.replaceChildren(...data.entry_points.map((e) => h("option", { value: e.name }, e.name)));
  renderParamFields();
  scheduleEstimate();
}

function renderParamFields(values = {}) {
  const ep = state.entryPoints[$("#entry-point").value];
  $("#entry-command").textContent = ep ? ep.command : "";
  const fields = (ep ? ep.params : []).map((p) => {
    const given = values[p.name];
    const value = given !== undefined ? given : p.default === null ? "" : String(p.default);
    const input = h("input", {
      name: `param-${p.name}`,
      "data-param": p.name,
      "data-type": p.type,
      "data-default": p.default === null ? null : String(p.default),
      type: p.type === "float" ? "number" : "text",
      step: p.type === "float" ? "any" : null,
      required: p.required,
      value,
      placeholder: p.required ? "required" : p.default === "" ? "(empty)" : null,
    });
    const wide = p.type !== "float";
    return h("label", { class: wide ? "field wide" : "field", "data-field": `params.${p.name}` },
      h("span", {}, p.name, " ", h("em", {}, p.type), p.required ? h("b", {}, " *") : null), input);
  });
  $("#param-fields").replaceChildren(...fields);
}

// ---- time estimate and quick preset (POST /api/training/estimate; jobs/estimate.py) --------------------
let estimateTimer = null;

function duration(seconds) {
  if (seconds < 90) return `${Math.max(1, Math.round(seconds))} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  const hours = Math.floor(seconds / 3600), minutes = Math.round((seconds % 3600) / 60);
  return hours >= 48 ? `${Math.round(hours / 24)} days` : `${hours} h ${minutes} min`;
}

function scheduleEstimate() {
  clearTimeout(estimateTimer);
  estimateTimer = setTimeout(updateEstimate, 250);
}

async function updateEstimate() {
  const entry = $("#entry-point").value, out = $("#estimate"), quick = $("#quick-preset");
  if (!entry) return;
  try {
    const est = await api("/api/training/estimate", { json: { entry_point: entry, params: formParams() } });
    if (entry !== $("#entry-point").value) return; // the user moved on while we asked
    const what = est.images ? ` (${est.images} training images)` : "";
    out.textContent = est.seconds === null
      ? `Time: ${est.basis}.`
      : `About ${duration(est.seconds)} of training on ${est.device}${what}; ${est.basis}.`;
    out.classList.toggle("long", est.seconds !== null && est.seconds > 3600);
    state.quick = est.quick;
    quick.hidden = !Object.keys(est.quick || {}).length;
  } catch (e) {
    out.textContent = `No estimate: ${e.message}`;
  }
}

function applyQuickPreset() {
  const values = {};
  for (const input of document.querySelectorAll("#param-fields input")) values[input.dataset.param] = input.value;
  for (const [name, value] of Object.entries(state.quick || {})) values[name] = String(value);
  renderParamFields(values);
  updateEstimate();
}

function formParams() {
  const params = {};
  for (const input of document.querySelectorAll("#param-fields input")) {
    const name = input.dataset.param, raw = input.value;
    const dflt = input.dataset.default;
    if (dflt !== undefined && raw === dflt) continue; // the MLproject default applies
    if (input.dataset.type === "float") {
      if (raw === "") continue;
      params[name] = Number(raw);
      if (dflt !== undefined && Number(raw) === Number(dflt)) delete params[name];
    } else if (!(raw === "" && dflt === undefined && !input.required)) {
      params[name] = raw;
    }
  }
  return params;
}

async function submitStart(ev) {
  ev.preventDefault();
  const button = $("#start-button"), err = $("#form-error");
  err.textContent = "";
  document.querySelectorAll(".field.invalid").forEach((f) => f.classList.remove("invalid"));
  button.disabled = true;
  try {
    const body = { entry_point: $("#entry-point").value, params: formParams() };
    const exp = $("#experiment-name").value.trim();
    if (exp) body.experiment_name = exp;
    const job = await api("/api/training/start", { json: body });
    await refreshJobs();
    selectJob(job.job_id);
  } catch (e) {
    err.textContent = e.message;
    const field = e.body && e.body.field;
    if (field) {
      const el = document.querySelector(`[data-field="${CSS.escape(field)}"]`);
      if (el) el.classList.add("invalid");
    }
  } finally {
    button.disabled = false;
  }
}

// ---- job list -----------------------------------------------------------------------------------------
async function refreshJobs() {
  try {
    const data = await api("/api/training/list?limit=100");
    state.jobs = data.jobs;
    renderJobList();
    banner("");
  } catch (e) {
    if (e.status !== 401) banner(`Cannot list jobs: ${e.message}`);
  }
}

function renderJobList() {
  const list = $("#job-list");
  if (!state.jobs.length) {
    list.replaceChildren(h("p", { class: "muted" }, "No jobs yet."));
  } else {
    list.replaceChildren(...state.jobs.map((j) => {
      const pct = j.status === "queued" ? 0 : j.progress.percent ?? (FINISHED.has(j.status) ? 100 : 0);
      const where = j.status === "queued" ? `queued #${j.queue_position}` : j.progress.total_epochs
        ? `epoch ${j.progress.current_epoch ?? 0}/${j.progress.total_epochs}` : "";
      return h("div", {
        class: `job-row ${j.status}${j.job_id === state.selectedJob ? " selected" : ""}`,
        "data-job": j.job_id, onclick: () => selectJob(j.job_id),
      },
      h("div", {}, h("span", { class: "id" }, j.job_id)),
      h("span", { class: `badge ${j.status}` }, j.status),
      h("div", { class: "when" }, [where, ago(j.created_at)].filter(Boolean).join(" · ")),
      h("div", {}),
      h("div", { class: "mini" }, h("div", { style: `width:${pct}%` })));
    }));
  }
  const running = state.jobs.filter((j) => j.status === "running").length;
  const queued = state.jobs.filter((j) => j.status === "queued").length;
  const max = state.config ? state.config.max_concurrent_jobs : "?";
  $("#queue-summary").textContent = `${running}/${max} running · ${queued} queued`;
}

// ---- job view -----------------------------------------------------------------------------------------
function selectJob(jobId) {
  if (state.selectedJob !== jobId) {
    state.selectedJob = jobId;
    state.previewKey = null;
    $("#job-preview-box").hidden = true;
    destroyCharts();
    $("#job-log").textContent = "";
    followLog(jobId);
  }
  document.querySelectorAll(".job-row").forEach((r) => r.classList.toggle("selected", r.dataset.job === jobId));
  $("#job-empty").hidden = true;
  $("#job-view").hidden = false;
  if (history.replaceState) history.replaceState(null, "", `#jobs/${jobId}`);
  clearTimeout(state.jobTimer);
  pollJob(jobId);
}

async function pollJob(jobId) {
  if (state.selectedJob !== jobId) return;
  let job = null;
  try {
    job = await api(`/api/training/${encodeURIComponent(jobId)}`);
    renderJob(job);
    if (job.run_id) await renderCharts(jobId);
    if (job.run_id) await renderPreview(job);
  } catch (e) {
    if (e.status === 404) { $("#job-view").hidden = true; $("#job-empty").hidden = false; return; }
    banner(`Cannot read job ${jobId}: ${e.message}`);
  }
  if (state.selectedJob !== jobId) return;
  const done = job && FINISHED.has(job.status);
  if (done && job.run_id) await renderAdvice(jobId);
  if (!done) state.jobTimer = setTimeout(() => pollJob(jobId), 1000);
}

// A finished job: what `kiln advise` says about its run (findings with evidence and -P overrides).
async function renderAdvice(jobId) {
  const box = $("#job-advice");
  let data;
  try { data = await api(`/api/training/${encodeURIComponent(jobId)}/advice`); } catch { box.hidden = true; return; }
  const advice = data.advice;
  box.hidden = !advice;
  if (!advice) return;
  const items = advice.findings.map((f) => h("li", {}, h("b", {}, f.kind), ` — ${f.summary}`,
    f.command ? h("pre", { class: "log" }, f.command) : null));
  box.replaceChildren(h("h3", {}, "Advice"), h("p", { class: "muted" }, advice.headline),
    items.length ? h("ul", { class: "advice" }, ...items) : h("p", {}, "No problem found in the curves."));
}

function renderJob(job) {
  $("#job-title").textContent = job.job_id;
  $("#job-sub").textContent = `${job.entry_point}${job.experiment_name ? " · " + job.experiment_name : ""}`;
  const status = $("#job-status");
  status.textContent = job.status;
  status.className = `badge ${job.status}`;
  const link = $("#job-mlflow");
  link.hidden = !job.mlflow_url;
  if (job.mlflow_url) link.href = job.mlflow_url;
  $("#cancel-button").disabled = FINISHED.has(job.status);
  $("#cancel-button").hidden = FINISHED.has(job.status);
  $("#remove-button").hidden = !FINISHED.has(job.status);

  const p = job.progress, bar = $("#job-progress");
  const pct = job.status === "completed" ? 100 : p.percent ?? 0;
  const busy = job.status === "running" && (p.percent === null || (p.phase && p.phase !== "training"));
  bar.className = `progress ${job.status}${busy ? " indeterminate" : ""}`;
  bar.querySelector(".bar").style.width = `${pct}%`;
  bar.setAttribute("aria-valuenow", String(pct));
  $("#progress-label").textContent = progressText(job);

  const err = $("#job-error");
  const problem = job.error && job.status !== "completed" ? job.error : job.progress_error;
  err.hidden = !problem;
  err.textContent = problem || "";

  const facts = [
    ["Status", job.status], ["Run", job.run_id || "–"], ["Created", fmtTime(job.created_at)],
    ["Started", fmtTime(job.started_at)], ["Finished", fmtTime(job.finished_at)],
    ["Duration", duration(job.duration_seconds)], ["Exit code", job.exit_code ?? "–"], ["PID", job.pid ?? "–"],
    ["Params", Object.entries(job.params).map(([k, v]) => `${k}=${v}`).join("  ") || "(defaults)"],
  ];
  $("#job-facts").replaceChildren(...facts.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, String(v))]));
  const main = taskMetrics(job.task_metric, Object.keys(job.metrics));
  const metrics = Object.entries(job.metrics).sort(([a], [b]) => rankMetric(main, a) - rankMetric(main, b) || a.localeCompare(b));
  $("#job-metrics").replaceChildren(...(metrics.length ? metrics.map(([k, v]) => h("tr", { class: main.includes(k) ? "metric-main" : null }, h("td", {}, k), h("td", {}, fmtNum(v))))
    : [h("tr", {}, h("td", { class: "muted", colspan: 2, style: "text-align:left" }, "none yet"))]));
  renderRegistered(job);
  state.currentJob = job;
  const listed = state.jobs.find((j) => j.job_id === job.job_id);
  if (listed && listed.status !== job.status) refreshJobs(); // keep the list in step with the view
}

const PHASES = { finishing: "epochs done, exporting the model…", exporting: "exporting to ONNX and checking it…",
  registering: "registering the model…" };

function progressText(job) {
  const p = job.progress;
  if (job.status === "queued") return `Waiting in the queue (position ${job.queue_position}).`;
  const epochs = p.total_epochs ? `Epoch ${p.current_epoch ?? 0} / ${p.total_epochs}` : "No epoch count";
  if (job.status === "running") {
    if (PHASES[p.phase]) return `${epochs} · ${PHASES[p.phase]}`;
    if (!p.current_epoch) return `Starting… ${p.total_epochs ? `(${p.total_epochs} epochs)` : ""}`;
    const eta = p.eta_seconds !== null && p.eta_seconds !== undefined ? ` · about ${duration(p.eta_seconds)} left` : "";
    return `${epochs} · ${p.percent ?? 0}%${eta}`;
  }
  if (job.status === "completed") return p.stopped_early ? `${epochs} · stopped early (no better metric for patience epochs) · done` : `${epochs} · done`;
  return epochs;
}

// The run's ranking metric (kiln.metric, e.g. best_val_iou or best/mAP50-95) and its per-epoch curve (val_iou,
// metrics/mAP50-95): the names the page shows first.
function taskMetrics(metric, names) {
  if (!metric) return [];
  const base = metric.replace(/^best[_/]/, "");
  const tail = base.split("/").pop();
  return names.filter((n) => n === metric || n === base || n.split("/").pop() === tail)
    .sort((a, b) => (a === metric ? 1 : 0) - (b === metric ? 1 : 0));
}

function rankMetric(main, name) { return main.includes(name) ? main.indexOf(name) : main.length; }

// A finished job: the versions its run registered, each with a promote button that goes through the same gates.
function renderRegistered(job) {
  const box = $("#job-registered");
  const versions = job.registered || [];
  const why = job.not_registered_reason;
  box.hidden = !versions.length && !why;
  if (!versions.length) {
    // training registers only a model that beats its family's trivial baseline (or with register=always)
    if (why && box.dataset.key !== `why:${why}`) {
      box.dataset.key = `why:${why}`;
      box.replaceChildren(h("span", {}, "Not registered: ", why, ". Train longer, or set register=always to register it anyway."));
    } else if (!why) { box.replaceChildren(); box.dataset.key = ""; }
    return;
  }
  const key = versions.map((v) => `${v.name}:${v.version}:${v.aliases.join()}`).join(" ");
  if (box.dataset.key === key) return;
  box.dataset.key = key;
  const result = h("div", { class: "result", hidden: true });
  const items = versions.flatMap((v) => [
    h("span", {}, "Registered ", h("b", {}, `${v.name} v${v.version}`),
      v.aliases.length ? ` · ${v.aliases.join(", ")}` : ""),
    v.aliases.includes("production") ? null : h("button", { class: "primary", type: "button", "data-promote-job": `${v.name}:${v.version}`,
      onclick: () => promoteVersion(v.name, v.version, {}, result, () => { box.dataset.key = ""; pollJob(state.selectedJob); }) },
    "Promote this version"),
    h("a", { class: "button ghost", href: v.mlflow_url, target: "_blank", rel: "noopener" }, "Model in MLflow ↗"),
  ]);
  box.replaceChildren(...items, result);
}

// POST a promotion; a refused gate shows every gate's verdict and, when forcing would move it, a force button.
async function promoteVersion(name, version, body, result, done) {
  try {
    const r = await api(`/api/models/${encodeURIComponent(name)}/promote`, { json: { version, ...body } });
    const moved = r.moved ? `v${r.version} is now ${r.alias}${r.previous_version ? ` (was v${r.previous_version})` : ""}${r.forced ? ", forced" : ""}.`
      : `v${r.version} already held ${r.alias}.`;
    showResult(result, true, moved + (r.warnings && r.warnings.length ? `\n${r.warnings.join("\n")}` : ""));
    if (done) setTimeout(done, 1200);
  } catch (e) {
    const checks = (e.body.checks || []).map((c) => `${c.passed ? "✓" : "✗"} ${c.detail}`).join("\n");
    showResult(result, false, e.message + (checks ? `\n${checks}` : ""));
    if (e.body.can_force && !body.force) {
      result.append(h("div", { class: "form-actions" }, h("button", { class: "danger", type: "button", "data-force": `${name}:${version}`,
        onclick: () => promoteVersion(name, version, { ...body, force: true, reason: body.reason || "forced from the jobs page" }, result, done) },
      "Promote anyway (forced, recorded)")));
    }
  }
}

function fmtTime(iso) { return iso ? `${new Date(iso).toLocaleString()} (${ago(iso)})` : "–"; }

async function cancelSelected() {
  const jobId = state.selectedJob;
  const button = $("#cancel-button");
  button.disabled = true;
  button.textContent = "Cancelling…";
  try {
    const job = await api(`/api/training/${encodeURIComponent(jobId)}/cancel`, { method: "POST" });
    renderJob(job);
    refreshJobs();
  } catch (e) {
    banner(`Cancel failed: ${e.message}`);
    button.disabled = false;
  } finally {
    button.textContent = "Cancel";
  }
}

async function removeSelected() {
  const jobId = state.selectedJob;
  try {
    await api(`/api/training/${encodeURIComponent(jobId)}`, { method: "DELETE" });
  } catch (e) { banner(`Remove failed: ${e.message}`); return; }
  state.selectedJob = null;
  if (state.logAbort) state.logAbort.abort();
  destroyCharts();
  $("#job-view").hidden = true;
  $("#job-empty").hidden = false;
  history.replaceState(null, "", "#jobs");
  refreshJobs();
}

function rerunSelected() {
  const job = state.currentJob;
  if (!job || !state.entryPoints[job.entry_point]) return;
  $("#entry-point").value = job.entry_point;
  renderParamFields(job.params);
  $("#experiment-name").value = job.experiment_name || "";
  $("#start-form").scrollIntoView({ behavior: "smooth" });
  $("#start-button").focus();
}

// ---- log stream (server-sent events read with fetch, so the bearer token goes along) ------------------
async function followLog(jobId) {
  if (state.logAbort) state.logAbort.abort();
  const abort = new AbortController();
  state.logAbort = abort;
  const pre = $("#job-log");
  let offset = 0;
  while (!abort.signal.aborted) {
    try {
      const res = await fetch(`/api/training/${encodeURIComponent(jobId)}/logs/stream?offset=${offset}`,
        { headers: authHeaders(), signal: abort.signal });
      if (!res.ok) { if (res.status === 401) askToken(); return; }
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const event = parseEvent(buffer.slice(0, cut));
          buffer = buffer.slice(cut + 2);
          if (event.id) offset = Number(event.id);
          if (event.type === "end") return;
          if (event.data !== null) appendLog(pre, event.data);
        }
      }
    } catch (e) {
      if (abort.signal.aborted) return;
    }
    await new Promise((r) => setTimeout(r, 1000)); // the stream dropped: resume from the last offset
  }
}

function parseEvent(block) {
  const event = { type: "message", data: null, id: null };
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue;
    const i = line.indexOf(":");
    const field = i < 0 ? line : line.slice(0, i);
    const value = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
    if (field === "data") data.push(value);
    else if (field === "event") event.type = value;
    else if (field === "id") event.id = value;
  }
  if (data.length) event.data = data.join("\n");
  return event;
}

function appendLog(pre, text) {
  const follow = $("#log-follow").checked;
  pre.append(text + "\n");
  if (pre.childNodes.length > 4000) pre.firstChild.remove();
  if (follow) pre.scrollTop = pre.scrollHeight;
}

// ---- charts -------------------------------------------------------------------------------------------
function destroyCharts() {
  for (const c of state.charts.values()) c.plot.destroy();
  state.charts.clear();
  $("#job-charts").replaceChildren(h("p", { class: "muted" }, "No metrics logged yet."));
}

// Curves from several series on their own steps -> uPlot's aligned [xs, ys1, ys2, ...] (null where absent).
function align(curves) {
  const xs = [...new Set(curves.flatMap((c) => c.steps))].sort((a, b) => a - b);
  const index = new Map(xs.map((x, i) => [x, i]));
  const ys = curves.map((c) => {
    const y = new Array(xs.length).fill(null);
    c.steps.forEach((s, i) => { y[index.get(s)] = c.values[i]; });
    return y;
  });
  return [xs, ...ys];
}

// Per-epoch curves get charts; one-off values (best_*, logged once at the end) stay in the
// metrics table, unless nothing has a second point yet (the first epoch).
function chartGroups(metrics, taskMetric) {
  const all = Object.keys(metrics).sort();
  const curves = all.filter((n) => metrics[n].steps.length > 1);
  const names = curves.length ? curves : all;
  const main = taskMetrics(taskMetric, names).filter((n) => !/loss/i.test(n));
  const losses = names.filter((n) => /loss/i.test(n));
  const groups = main.map((n) => [n, [n]]);
  if (losses.length) groups.push(["loss", losses]);
  for (const n of names) if (!losses.includes(n) && !main.includes(n)) groups.push([n, [n]]);
  return groups;
}

function makePlot(el, title, labels, data, height = 200) {
  const width = Math.max(260, el.clientWidth - 10);
  const opts = {
    title, width, height,
    scales: { x: { time: false } },
    axes: [{ label: "epoch", incrs: EPOCH_STEPS }, { size: 60, values: (u, ticks) => ticks.map(fmtTick) }],
    series: [{ label: "epoch" }, ...labels.map((l, i) => ({ label: l, stroke: COLORS[i % COLORS.length], width: 2,
      points: { size: 5 }, spanGaps: true }))],
    legend: { live: true },
  };
  return new uPlot(opts, data, el);
}

async function renderCharts(jobId) {
  let data;
  try { data = await api(`/api/training/${encodeURIComponent(jobId)}/metrics`); } catch { return; }
  if (state.selectedJob !== jobId) return;
  const groups = chartGroups(data.metrics, state.currentJob ? state.currentJob.task_metric : null);
  const box = $("#job-charts");
  if (!groups.length) return;
  if (!state.charts.size) box.replaceChildren();
  const titles = new Set(groups.map(([title]) => title));
  for (const [title, chart] of state.charts) {
    if (!titles.has(title)) { chart.plot.destroy(); chart.el.remove(); state.charts.delete(title); }
  }
  const order = groups.map(([title]) => title).join("|");
  if (state.chartOrder !== order) {
    for (const chart of state.charts.values()) { chart.plot.destroy(); chart.el.remove(); }
    state.charts.clear();
    state.chartOrder = order;
  }
  for (const [title, names] of groups) {
    const aligned = align(names.map((n) => data.metrics[n]));
    const existing = state.charts.get(title);
    if (existing && existing.names.join() === names.join()) { existing.plot.setData(aligned); continue; }
    if (existing) { existing.plot.destroy(); existing.el.remove(); }
    const el = h("div", { class: "chart", "data-chart": title });
    box.append(el);
    state.charts.set(title, { el, names, plot: makePlot(el, title, names, aligned) });
  }
}

// The newest prediction picture, fetched with the token (an <img src> could not send it) when the epoch moves.
async function renderPreview(job) {
  const key = `${job.job_id}:${job.progress.current_epoch}:${job.status}`;
  if (state.previewKey === key) return;
  let res;
  try { res = await fetch(`/api/training/${encodeURIComponent(job.job_id)}/preview`, { headers: authHeaders() }); } catch { return; }
  if (state.selectedJob !== job.job_id) return;
  const box = $("#job-preview-box");
  if (!res.ok) { box.hidden = true; state.previewKey = res.status === 404 ? key : null; return; }
  state.previewKey = key;
  const img = $("#job-preview");
  if (img.src.startsWith("blob:")) URL.revokeObjectURL(img.src);
  img.src = URL.createObjectURL(await res.blob());
  $("#job-preview-name").textContent = res.headers.get("X-Kiln-Artifact") || "";
  box.hidden = false;
}

// ---- compare ------------------------------------------------------------------------------------------
async function loadRuns() {
  try {
    const data = await api("/api/runs?limit=100");
    state.runs = data.runs;
  } catch (e) { banner(`Cannot list runs: ${e.message}`); return; }
  const rows = state.runs.map((r) => {
    const box = h("input", { type: "checkbox", "data-run": r.run_id, checked: state.compareSelected.has(r.run_id),
      onchange: (ev) => toggleCompare(r.run_id, ev.target.checked) });
    return h("label", { class: "run-row" }, box,
      h("span", { class: "name" }, r.run_name || r.run_id.slice(0, 8)),
      h("span", { class: `badge ${runBadge(r.status)}` }, r.status.toLowerCase()),
      h("span", { class: "sub" }, [r.entry_point, r.experiment_name, ago(r.start_time), `${r.metrics.length} metrics`]
        .filter(Boolean).join(" · ")));
  });
  $("#run-list").replaceChildren(...(rows.length ? rows : [h("p", { class: "muted" }, "No runs in the tracking store.")]));
}

function runBadge(status) {
  return { RUNNING: "running", FINISHED: "completed", FAILED: "failed", KILLED: "cancelled" }[status] || "";
}

async function toggleCompare(runId, on) {
  if (on) {
    state.compareSelected.add(runId);
    if (!state.compareCurves.has(runId)) {
      try {
        const data = await api(`/api/runs/${encodeURIComponent(runId)}/metrics`);
        state.compareCurves.set(runId, data.metrics);
      } catch (e) { banner(`Cannot read run ${runId}: ${e.message}`); }
    }
  } else {
    state.compareSelected.delete(runId);
  }
  renderCompareMetricChoices();
  renderCompare();
}

function renderCompareMetricChoices() {
  const select = $("#compare-metric");
  const keep = select.value;
  const names = new Set();
  for (const id of state.compareSelected) Object.keys(state.compareCurves.get(id) || {}).forEach((n) => names.add(n));
  const sorted = [...names].sort();
  select.replaceChildren(...sorted.map((n) => h("option", { value: n }, n)));
  select.value = sorted.includes(keep) ? keep : sorted.find((n) => /val.*loss/.test(n)) || sorted.find((n) => /loss/.test(n)) || sorted[0] || "";
}

function renderCompare() {
  const metric = $("#compare-metric").value;
  const box = $("#compare-chart");
  if (state.compareChart) { state.compareChart.destroy(); state.compareChart = null; }
  const ids = [...state.compareSelected].filter((id) => (state.compareCurves.get(id) || {})[metric]);
  const runsById = Object.fromEntries(state.runs.map((r) => [r.run_id, r]));
  const label = (id) => (runsById[id] && runsById[id].run_name) || id.slice(0, 8);
  if (!ids.length) {
    box.replaceChildren(h("p", { class: "muted" }, state.compareSelected.size ? `No selected run logged ${metric}.` : "Select two or more runs."));
    $("#compare-table").replaceChildren();
    return;
  }
  box.replaceChildren();
  const curves = ids.map((id) => state.compareCurves.get(id)[metric]);
  state.compareChart = makePlot(box, metric, ids.map(label), align(curves), 360);
  const head = h("tr", {}, h("th", {}, "run"), h("th", {}, "last"), h("th", {}, "best (min)"), h("th", {}, "best (max)"), h("th", {}, "epochs"));
  const rows = ids.map((id, i) => {
    const v = state.compareCurves.get(id)[metric].values;
    return h("tr", {}, h("td", {}, h("span", { class: "swatch", style: `background:${COLORS[i % COLORS.length]}` }), label(id)),
      h("td", {}, fmtNum(v[v.length - 1])), h("td", {}, fmtNum(Math.min(...v))), h("td", {}, fmtNum(Math.max(...v))),
      h("td", {}, String(v.length)));
  });
  $("#compare-table").replaceChildren(head, ...rows);
}

// ---- efficiency frontier (GET /api/leaderboard, the same board as `kiln leaderboard`) ---------------------
const FRONTIER_AXES = [["parameters", "parameters", 3], ["latency_p50_ms", "p50 latency, ms", 1]];

function frontierQuery() {
  const params = new URLSearchParams();
  for (const [id, key] of [["#frontier-task", "task"], ["#frontier-metric", "metric"],
    ["#frontier-max-params", "max_params"], ["#frontier-max-latency", "max_latency_ms"]]) {
    const v = $(id).value.trim();
    if (v) params.set(key, v);
  }
  return params.toString();
}

async function loadFrontier(ev) {
  if (ev) ev.preventDefault();
  const error = $("#frontier-error");
  let board;
  try { board = await api(`/api/leaderboard?${frontierQuery()}`); } catch (e) { error.textContent = e.message; return; }
  error.textContent = "";
  renderFrontier(board);
}

function destroyFrontierCharts() {
  for (const plot of state.frontierCharts || []) plot.destroy();
  state.frontierCharts = [];
}

// A log axis hands uPlot's tick formatter nulls for the ticks it leaves unlabelled.
function ticksOrBlank(u, ticks) { return ticks.map((v) => (v === null || v === undefined ? "" : fmtTick(v))); }

// One scatter: every placed version as a point, the frontier's versions joined by a line, sorted on x.
// uPlot wants ascending x; repeated x values are fine. The x legend names the version under the cursor.
function frontierPlot(el, placed, key, label, distr, metric) {
  const sorted = [...placed].sort((a, b) => a[key] - b[key]);
  const data = [sorted.map((e) => e[key]), sorted.map((e) => e.value), sorted.map((e) => (e.frontier ? e.value : null))];
  const opts = {
    title: `${metric} vs ${label}`, width: Math.max(300, el.clientWidth - 10), height: 300,
    scales: { x: { time: false, distr, log: 10 } },
    axes: [{ label, values: ticksOrBlank }, { size: 60, label: metric, values: ticksOrBlank }],
    series: [
      { label: "version", value: (u, v, si, i) => (i === null || i === undefined ? "–" : `${sorted[i].model} v${sorted[i].version} (${fmtNum(v)})`) },
      { label: "versions", stroke: COLORS[1], paths: () => null, points: { show: true, size: 8, fill: COLORS[1] } },
      { label: "frontier", stroke: COLORS[0], width: 2, spanGaps: true, points: { show: true, size: 10, fill: COLORS[0] } },
    ],
    legend: { live: true },
  };
  return new uPlot(opts, data, el);
}

function renderFrontier(board) {
  destroyFrontierCharts();
  const byLabel = Object.fromEntries(board.entries.map((e) => [`${e.model} v${e.version}`, e]));
  const placed = board.entries.filter((e) => e.value !== null && e.parameters !== null && e.latency_p50_ms !== null);
  const box = $("#frontier-charts");
  const metric = board.metric || (placed.length ? placed[0].metric : "metric");
  if (!placed.length) {
    box.replaceChildren(h("p", { class: "muted" }, board.entries.length
      ? "No version has both a metric and a footprint: run `kiln leaderboard --measure`." : "No registered versions match."));
  } else {
    box.replaceChildren();
    for (const [key, label, distr] of FRONTIER_AXES) {
      const usable = distr === 3 ? placed.filter((e) => e[key] > 0) : placed;
      const el = h("div", { class: "chart", "data-frontier-chart": key });
      box.append(el);
      state.frontierCharts.push(frontierPlot(el, usable, key, label, distr, metric));
    }
  }
  const head = h("tr", {}, ...["version", "metric", "value", "params", "p50 ms", "p99 ms", "MB", "aliases"].map((t) => h("th", {}, t)));
  const rows = board.frontier.map((name) => byLabel[name]).map((e) => h("tr", { class: "on-frontier", "data-version": `${e.model}:${e.version}` },
    h("td", {}, `${e.model} v${e.version}`, e.source_version ? h("span", { class: "muted" }, ` int8 of v${e.source_version}`) : null),
    h("td", {}, e.metric), h("td", {}, fmtNum(e.value)), h("td", {}, fmtNum(e.parameters)),
    h("td", {}, fmtNum(e.latency_p50_ms)), h("td", {}, fmtNum(e.latency_p99_ms)),
    h("td", {}, e.size_bytes === null ? "–" : (e.size_bytes / 1e6).toFixed(2)), h("td", {}, e.aliases.join(", "))));
  $("#frontier-table").replaceChildren(head, ...rows);
  const budgetRows = board.budgets.map((b) => {
    const parts = [];
    if (b.max_params !== null) parts.push(`params ≤ ${b.max_params.toLocaleString()}`);
    if (b.max_latency_ms !== null) parts.push(`p50 ≤ ${b.max_latency_ms} ms`);
    const best = b.best ? byLabel[b.best] : null;
    return h("tr", {}, h("td", {}, parts.join(" and ") || "no budget"),
      h("td", { "data-best": b.best || "" }, best ? `${b.best}  ${best.metric} ${fmtNum(best.value)}` : "(none fits)"));
  });
  $("#frontier-budgets").replaceChildren(h("tr", {}, h("th", {}, "budget"), h("th", {}, "best version")), ...budgetRows);
  const unplaced = $("#frontier-unplaced");
  unplaced.hidden = !board.unplaced.length;
  unplaced.textContent = `Not placed (no metric or no footprint; try kiln leaderboard --measure): ${board.unplaced.join(", ")}`;
}

// ---- models -------------------------------------------------------------------------------------------
async function loadModels() {
  const list = $("#model-list");
  let data;
  try { data = await api("/api/models"); } catch (e) {
    list.replaceChildren(h("div", { class: "card" }, `Cannot list models: ${e.message}`));
    return;
  }
  if (!data.models.length) {
    list.replaceChildren(h("div", { class: "card empty" }, "No registered models yet. Training registers one per run."));
    return;
  }
  list.replaceChildren(...data.models.map(modelCard));
}

function modelCard(m) {
  const prod = m.aliases.find((a) => a.alias === "production");
  const others = m.aliases.filter((a) => a.alias !== "production");
  const prodBox = prod
    ? h("div", { class: "prod" }, h("span", {}, "production"), h("span", { class: "v", "data-production": m.name }, `v${prod.version}`),
      h("span", { class: "mono" }, Object.entries(prod.metrics).map(([k, v]) => `${k} ${fmtNum(v)}`).join("   ")),
      prod.promoted_at ? h("span", { class: "muted" }, `by ${prod.promoted_by} ${ago(prod.promoted_at)}`) : null)
    : h("div", { class: "prod none", "data-production": m.name }, "No production version yet.",
      m.latest_version ? h("span", { class: "mono" }, ` Latest v${m.latest_version}: `,
        Object.entries(m.latest_metrics || {}).map(([k, v]) => `${k} ${fmtNum(v)}`).join("   ") || "no metrics") : null);
  const result = h("div", { class: "result", hidden: true });
  const rows = m.versions.map((v) => h("tr", {},
    h("td", {}, h("a", { href: v.mlflow_url, target: "_blank", rel: "noopener" }, `v${v.version}`)),
    h("td", {}, v.aliases.join(", ")),
    h("td", { class: "mono" }, Object.entries(v.metrics).slice(0, 3).map(([k, x]) => `${k} ${fmtNum(x)}`).join("  ")),
    h("td", {}, v.aliases.includes("production") ? "" :
      h("button", { class: "ghost", type: "button", "data-promote": `${m.name}:${v.version}`,
        onclick: (ev) => openPromote(ev.target.closest(".model-card"), m, v.version, result) }, "Promote…"))));
  const card = h("div", { class: "card model-card", "data-model": m.name },
    h("h2", {}, h("a", { href: m.mlflow_url, target: "_blank", rel: "noopener" }, m.name),
      h("span", { class: "muted" }, m.latest_version ? `latest v${m.latest_version}` : "")),
    prodBox,
    others.length ? h("p", { class: "muted" }, others.map((a) => `${a.alias}: v${a.version}`).join(" · ")) : null,
    h("div", { class: "promote-slot" }),
    result,
    h("table", { class: "table" }, h("tr", {}, h("th", {}, "version"), h("th", {}, "aliases"), h("th", {}, "key metrics"), h("th", {})), ...rows),
    prod ? h("div", { class: "form-actions" }, h("button", { class: "danger", type: "button",
      onclick: () => rollbackModel(m, result) }, "Roll back production")) : null,
    m.history.length ? h("div", {}, h("h3", {}, "History"), h("ul", { class: "history" }, ...m.history.map((e) =>
      h("li", {}, `${ago(e.at)}: ${e.action} ${e.alias} → v${e.version}${e.previous_version ? ` (was v${e.previous_version})` : ""} by ${e.by}${e.forced ? " (forced)" : ""}${e.reason ? ` — ${e.reason}` : ""}`)))) : null);
  return card;
}

function openPromote(card, model, version, result) {
  const slot = card.querySelector(".promote-slot");
  const field = (label, input) => h("label", { class: "field" }, h("span", {}, label), input);
  const metric = h("input", { name: "metric", value: model.metric_hint || "", placeholder: "kiln.metric tag" });
  const mode = h("select", { name: "mode" }, h("option", { value: "" }, "auto"), h("option", { value: "max" }, "max"), h("option", { value: "min" }, "min"));
  const minValue = h("input", { name: "min_value", type: "number", step: "any", placeholder: "none" });
  const reason = h("input", { name: "reason", placeholder: "why this version" });
  const force = h("input", { name: "force", type: "checkbox" });
  const significance = h("input", { name: "significance", type: "number", step: "any", min: "0", max: "0.5", placeholder: "off (e.g. 0.05)" });
  const form = h("form", { class: "promote-form" },
    h("div", { class: "wide" }, h("b", {}, `Promote ${model.name} v${version} to production`)),
    field("Gate metric", metric), field("Better is", mode), field("Minimum", minValue), field("Significance", significance),
    h("label", { class: "field wide" }, h("span", {}, "Reason"), reason),
    h("label", { class: "wide" }, force, " force (override failed gates; recorded)"),
    h("div", { class: "wide form-actions" }, h("button", { class: "primary", type: "submit" }, "Promote"),
      h("button", { class: "ghost", type: "button", onclick: () => slot.replaceChildren() }, "Close")));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = { reason: reason.value, force: force.checked };
    if (metric.value.trim()) body.metric = metric.value.trim();
    if (mode.value) body.mode = mode.value;
    if (minValue.value !== "") body.min_value = Number(minValue.value);
    if (significance.value !== "") body.significance = Number(significance.value);
    await promoteVersion(model.name, version, body, result, loadModels);
  });
  slot.replaceChildren(form);
}

async function rollbackModel(model, result) {
  if (!confirm(`Move production of ${model.name} back to the version before?`)) return;
  try {
    const r = await api(`/api/models/${encodeURIComponent(model.name)}/rollback`, { json: { reason: "rolled back from the jobs page" } });
    showResult(result, true, `production is v${r.version} again (was v${r.previous_version}).`);
    setTimeout(loadModels, 1200);
  } catch (e) { showResult(result, false, e.message); }
}

function showResult(el, ok, text) {
  el.hidden = false;
  el.className = `result ${ok ? "ok" : "bad"}`;
  el.textContent = text;
}

// ---- start-up -----------------------------------------------------------------------------------------
async function init() {
  document.querySelectorAll(".tab").forEach((b) => b.addEventListener("click", () => showTab(b.dataset.tab)));
  $("#entry-point").addEventListener("change", () => { renderParamFields(); scheduleEstimate(); });
  $("#param-fields").addEventListener("input", scheduleEstimate);
  $("#quick-preset").addEventListener("click", applyQuickPreset);
  $("#start-form").addEventListener("submit", submitStart);
  $("#cancel-button").addEventListener("click", cancelSelected);
  $("#rerun-button").addEventListener("click", rerunSelected);
  $("#remove-button").addEventListener("click", removeSelected);
  $("#runs-refresh").addEventListener("click", loadRuns);
  $("#models-refresh").addEventListener("click", loadModels);
  $("#compare-metric").addEventListener("change", renderCompare);
  $("#frontier-form").addEventListener("submit", loadFrontier);
  $("#token-button").addEventListener("click", () => askToken());
  $("#token-dialog").addEventListener("close", () => {
    if ($("#token-dialog").returnValue === "save") {
      localStorage.setItem("kiln-token", $("#token-input").value.trim());
      location.reload();
    }
  });
  state.config = await (await fetch("/api/config")).json();
  $("#token-button").hidden = !state.config.auth_required;
  $("#mlflow-link").href = state.config.mlflow_runs_url || state.config.mlflow_ui_url;
  if (state.config.auth_required && !localStorage.getItem("kiln-token")) { askToken(); return; }
  try { await loadEntryPoints(); } catch (e) { banner(`Cannot read the MLproject: ${e.message}`); }
  await refreshJobs();
  setInterval(refreshJobs, 2000);
  const [tab, jobId] = location.hash.slice(1).split("/");
  if (tab === "compare" || tab === "models") showTab(tab);
  else if (jobId) selectJob(jobId);
}

document.addEventListener("DOMContentLoaded", init);
