// kiln serve's try-it page: list the served models, run one on an upload or a record, draw the answer.
// Talks only to this server (/v1/models, /v1/models/{name}/predict); draws on a canvas, no libraries.
"use strict";

const COLORS = ["#e03131", "#1c7ed6", "#2b8a3e", "#f08c00", "#7048e8", "#0c8599", "#c2255c", "#5c940d"];
const PARAMS = {
  segmentation: [["threshold", "threshold", "0.5"]],
  detection: [["conf", "min confidence", "0.25"], ["iou", "NMS IoU", "0.45"], ["max_det", "max boxes", "300"]],
};
const state = { models: [], selected: null };

function $(sel) { return document.querySelector(sel); }

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) el.append(c instanceof Node ? c : String(c));
  return el;
}

function fmt(v, digits = 4) {
  if (typeof v !== "number") return String(v);
  return Number.isInteger(v) ? String(v) : v.toPrecision(digits);
}

// ---- API, with the bearer token when the server asks for one ------------------------------------------------
function headers() {
  const token = localStorage.getItem("kiln-serve-token");
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function call(path, init = {}) {
  const res = await fetch(path, { ...init, headers: { ...headers(), ...(init.headers || {}) } });
  const body = await res.json().catch(() => ({}));
  if (res.status === 401) { $("#token-button").hidden = false; askToken(); }
  if (!res.ok) throw new Error(body.error || `HTTP ${res.status}`);
  return body;
}

function askToken() {
  const dlg = $("#token-dialog");
  if (!dlg.open) dlg.showModal();
}

// ---- the model list --------------------------------------------------------------------------------------
async function loadModels() {
  let data;
  try { data = await call("/v1/models"); } catch (e) {
    $("#model-rows").replaceChildren(h("tr", {}, h("td", { colspan: 5, class: "muted" }, `Cannot list models: ${e.message}`)));
    return;
  }
  state.models = data.models;
  if (!state.models.length) {
    $("#model-rows").replaceChildren(h("tr", {}, h("td", { colspan: 5, class: "muted" },
      "No model is served yet. Promote one (kiln promote MODEL --version N); it appears here within seconds.")));
    return;
  }
  $("#model-rows").replaceChildren(...state.models.map((m) => h("tr", {
    "data-model": m.name, class: state.selected === m.name ? "selected" : null, onclick: () => select(m.name),
  }, h("td", {}, h("b", {}, m.name)), h("td", {}, m.version ? `v${m.version}` : "–"), h("td", {}, m.alias),
  h("td", {}, m.task || "(no kiln.task)"),
  h("td", {}, h("span", { class: m.ready ? "badge" : "badge down" }, m.ready ? "ready" : "loading")))));
  if (!state.selected) select(state.models[0].name);
}

function select(name) {
  state.selected = name;
  document.querySelectorAll("#model-rows tr").forEach((r) => r.classList.toggle("selected", r.dataset.model === name));
  const m = state.models.find((x) => x.name === name);
  $("#try").hidden = false;
  $("#try-name").textContent = name;
  $("#try-sub").textContent = m.version ? `v${m.version} · ${m.task || "no task"}` : "";
  $("#result").hidden = true;
  $("#error").hidden = true;
  const tabular = m.task === "tabular";
  $("#image-form").hidden = tabular || !m.task;
  $("#record-form").hidden = !tabular;
  if (tabular) {
    const names = (m.postprocess && m.postprocess.feature_names) || [];
    $("#feature-fields").replaceChildren(...names.map((f) => h("label", { class: "field" }, h("span", {}, f),
      h("input", { type: "text", inputmode: "decimal", "data-feature": f }))));
  } else {
    const post = m.postprocess || {};
    $("#param-fields").replaceChildren(...(PARAMS[m.task] || []).map(([key, label, dflt]) => h("label", { class: "field" },
      h("span", {}, label), h("input", { type: "number", step: "any", name: key, placeholder: String(post[key] ?? dflt) }))));
  }
  if (!m.task) showError("This model has no kiln.task metadata, so it has no task endpoint; use /v2 or /invocations.");
}

function showError(text) {
  const el = $("#error");
  el.hidden = !text;
  el.textContent = text || "";
}

// ---- running a model -------------------------------------------------------------------------------------
async function runImage(ev) {
  ev.preventDefault();
  const file = $("#image-input").files[0];
  if (!file) return;
  const m = state.models.find((x) => x.name === state.selected);
  const query = new URLSearchParams();
  for (const input of document.querySelectorAll("#param-fields input")) if (input.value !== "") query.set(input.name, input.value);
  const form = new FormData();
  form.append("image", file);
  showError("");
  $("#run-button").disabled = true;
  try {
    const qs = query.toString();
    const url = `/v1/models/${encodeURIComponent(m.name)}/predict${qs ? `?${qs}` : ""}`;
    const [answer, image] = await Promise.all([call(url, { method: "POST", body: form }), loadImage(URL.createObjectURL(file))]);
    await draw(m, answer, image);
  } catch (e) { showError(e.message); } finally { $("#run-button").disabled = false; }
}

async function runRecord(ev) {
  ev.preventDefault();
  const m = state.models.find((x) => x.name === state.selected);
  const record = {};
  for (const input of document.querySelectorAll("#feature-fields input")) {
    const raw = input.value.trim();
    if (raw === "") { record[input.dataset.feature] = null; continue; }
    const value = Number(raw);
    if (!Number.isFinite(value)) { showError(`${input.dataset.feature}: '${raw}' is not a number`); return; }
    record[input.dataset.feature] = value;
  }
  showError("");
  try {
    const answer = await call(`/v1/models/${encodeURIComponent(m.name)}/predict`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify([record]),
    });
    drawTabular(answer);
  } catch (e) { showError(e.message); }
}

function loadImage(src) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("the browser could not decode this image"));
    img.src = src;
  });
}

async function draw(model, answer, image) {
  $("#result").hidden = false;
  $("#raw").textContent = JSON.stringify(answer, (k, v) => (k === "mask_png" ? `${v.slice(0, 40)}…` : v), 2);
  $("#detail").replaceChildren();
  if (answer.task === "segmentation") return drawMask(answer, image);
  if (answer.task === "detection") return drawBoxes(answer, image);
  if (answer.task === "regression") return drawSpectra(answer);
  $("#summary").textContent = `${answer.task}: see the JSON below.`;
  $("#canvas").hidden = true;
}

function canvasFor(width, height) {
  const canvas = $("#canvas");
  canvas.hidden = false;
  canvas.width = width;
  canvas.height = height;
  canvas.style.width = `${Math.min(900, Math.max(width, 384))}px`; // small inputs are scaled up to be seen
  return canvas.getContext("2d");
}

// The mask (0/255 PNG at the image's size) tinted over the image, side by side with the mask alone.
async function drawMask(answer, image) {
  const mask = await loadImage(`data:image/png;base64,${answer.mask_png}`);
  const w = answer.width, hgt = answer.height;
  const ctx = canvasFor(w * 2 + 8, hgt);
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, w * 2 + 8, hgt);
  ctx.drawImage(image, 0, 0, w, hgt);
  const scratch = document.createElement("canvas");
  scratch.width = w; scratch.height = hgt;
  const sctx = scratch.getContext("2d");
  sctx.drawImage(mask, 0, 0);
  const m = sctx.getImageData(0, 0, w, hgt);
  const base = ctx.getImageData(0, 0, w, hgt);
  for (let i = 0; i < m.data.length; i += 4) {
    if (m.data[i] > 127) {
      base.data[i] = 0.45 * base.data[i] + 0.55 * 240;
      base.data[i + 1] = 0.45 * base.data[i + 1] + 0.55 * 80;
      base.data[i + 2] = 0.45 * base.data[i + 2] + 0.55 * 40;
    }
  }
  ctx.putImageData(base, 0, 0);
  ctx.drawImage(mask, w + 8, 0);
  $("#summary").textContent = `Foreground ${(100 * answer.foreground_fraction).toFixed(1)}% of ${w}×${hgt} px ` +
    `(threshold ${fmt(answer.threshold, 3)}). Left: overlay; right: the mask.`;
}

function drawBoxes(answer, image) {
  const w = answer.width, hgt = answer.height;
  const ctx = canvasFor(w, hgt);
  ctx.drawImage(image, 0, 0, w, hgt);
  const side = Math.max(w, hgt);
  ctx.lineWidth = Math.max(2, side / 300);
  ctx.font = `${Math.max(11, Math.round(side / 40))}px system-ui, sans-serif`;
  for (const d of answer.detections) {
    const [x1, y1, x2, y2] = d.box;
    const color = COLORS[d.class_id % COLORS.length];
    ctx.strokeStyle = color;
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    const label = `${d.class_name} ${d.confidence.toFixed(2)}`;
    const tw = ctx.measureText(label).width + 6, th = parseInt(ctx.font, 10) + 4;
    const top = y1 - th >= 0 ? y1 - th : y1;
    ctx.fillStyle = color;
    ctx.fillRect(x1, top, tw, th);
    ctx.fillStyle = "#fff";
    ctx.fillText(label, x1 + 3, top + th - 5);
  }
  $("#summary").textContent = `${answer.detections.length} detection(s) on ${w}×${hgt} px.`;
  $("#detail").replaceChildren(h("tr", {}, h("th", {}, "class"), h("th", {}, "confidence"), h("th", {}, "box [x1, y1, x2, y2]")),
    ...answer.detections.map((d) => h("tr", {}, h("td", {}, h("span", { class: "swatch", style: `background:${COLORS[d.class_id % COLORS.length]}` }), d.class_name),
      h("td", {}, d.confidence.toFixed(3)), h("td", {}, d.box.map((v) => v.toFixed(1)).join(", ")))));
}

// cr_recon-style outputs: every leading cell's last axis as one curve (e.g. R, G, G, B spectra over 30 bins).
function drawSpectra(answer) {
  const series = [];
  const walk = (node, path) => {
    if (Array.isArray(node) && typeof node[0] === "number") { series.push([path, node]); return; }
    if (Array.isArray(node)) node.forEach((child, i) => walk(child, [...path, i]));
  };
  walk(answer.output, []);
  const label = (path) => {
    let cell = answer.cells;
    for (const i of path) cell = cell && cell[i];
    return `${typeof cell === "string" ? cell : "out"} [${path.join(",")}]`;
  };
  const W = 720, H = 360, L = 50, B = 30, T = 12, R = 12;
  const ctx = canvasFor(W, H);
  ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, W, H);
  const all = series.flatMap(([, ys]) => ys);
  const lo = Math.min(0, ...all), hi = Math.max(...all, lo + 1e-9);
  const n = Math.max(...series.map(([, ys]) => ys.length));
  const x = (i) => L + (i / Math.max(1, n - 1)) * (W - L - R);
  const y = (v) => H - B - ((v - lo) / (hi - lo)) * (H - B - T);
  ctx.strokeStyle = "#adb5bd"; ctx.fillStyle = "#495057"; ctx.font = "11px system-ui";
  ctx.beginPath(); ctx.moveTo(L, T); ctx.lineTo(L, H - B); ctx.lineTo(W - R, H - B); ctx.stroke();
  for (let k = 0; k <= 4; k++) {
    const v = lo + (k / 4) * (hi - lo);
    ctx.fillText(fmt(v, 3), 4, y(v) + 4);
  }
  ctx.fillText("bin", W - R - 20, H - 8);
  for (let i = 0; i < n; i += Math.max(1, Math.round(n / 10))) ctx.fillText(String(i), x(i) - 3, H - B + 14);
  const colorOf = { R: "#e03131", G: "#2b8a3e", B: "#1c7ed6" };
  series.forEach(([path, ys], s) => {
    const name = label(path);
    ctx.strokeStyle = colorOf[name[0]] || COLORS[s % COLORS.length];
    ctx.setLineDash(s === 2 ? [5, 3] : []); // the second G of a Bayer cell, dashed
    ctx.lineWidth = 2;
    ctx.beginPath();
    ys.forEach((v, i) => (i ? ctx.lineTo(x(i), y(v)) : ctx.moveTo(x(i), y(v))));
    ctx.stroke();
  });
  ctx.setLineDash([]);
  $("#summary").textContent = `Output ${answer.shape.join("×")} (${answer.layout || "no layout"}): ${series.length} curves.`;
  $("#detail").replaceChildren(...series.map(([path, ys], s) => h("tr", {},
    h("td", {}, h("span", { class: "swatch", style: `background:${colorOf[label(path)[0]] || COLORS[s % COLORS.length]}` }), label(path)),
    h("td", {}, `min ${fmt(Math.min(...ys), 3)} · max ${fmt(Math.max(...ys), 3)}`))));
}

function drawTabular(answer) {
  $("#result").hidden = false;
  $("#canvas").hidden = true;
  $("#raw").textContent = JSON.stringify(answer, null, 2);
  const p = answer.predictions[0];
  $("#summary").textContent = `Prediction: ${typeof p === "object" ? JSON.stringify(p) : fmt(p)}`;
  const probs = answer.probabilities && answer.probabilities[0];
  $("#detail").replaceChildren(...(probs && answer.classes ? answer.classes.map((c, i) =>
    h("tr", {}, h("td", {}, String(c)), h("td", {}, `${(100 * probs[i]).toFixed(1)}%`))) : []));
}

// ---- start-up --------------------------------------------------------------------------------------------
document.addEventListener("DOMContentLoaded", () => {
  $("#image-form").addEventListener("submit", runImage);
  $("#record-form").addEventListener("submit", runRecord);
  $("#token-button").addEventListener("click", askToken);
  $("#token-dialog").addEventListener("close", () => {
    if ($("#token-dialog").returnValue === "save") {
      localStorage.setItem("kiln-serve-token", $("#token-input").value.trim());
      loadModels();
    }
  });
  loadModels();
  setInterval(loadModels, 5000); // versions swap and models appear while the page is open
});
