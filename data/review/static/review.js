// kiln review: go through the queue, fix boxes with the mouse, judge each image with one key.
// Plain JS and SVG, no dependencies, so the page works with no internet. Box coordinates are original image
// pixels: the SVG's viewBox is the image size, and pointer positions are mapped through getScreenCTM().
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const COLORS = ["#ff6b6b", "#4dabf7", "#ffd43b", "#69db7c", "#da77f2", "#ff922b", "#38d9a9", "#f783ac", "#a9e34b"];
const HANDLE = 8; // handle size in screen pixels
const MIN_SIZE = 2; // boxes smaller than this (image pixels) are discarded when drawn

const state = {
  names: [],
  items: [], // the queue, in review order
  index: -1,
  item: null, // the open item as the server sent it
  boxes: [], // the boxes being edited: {class_id, x1, y1, x2, y2, confidence?}
  selected: -1,
  activeClass: 0,
  drawing: false,
  drag: null,
  drafts: new Map(), // path -> edited boxes not saved yet (kept across navigation and stale saves)
  filter: "",
};

const $ = (id) => document.getElementById(id);

async function api(method, url, body) {
  const options = { method, headers: { "Content-Type": "application/json" } };
  if (body !== undefined) options.body = JSON.stringify(body);
  const response = await fetch(url, options);
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error(data.detail || `${method} ${url}: HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return data;
}

const itemUrl = (path) => "/api/items/" + path.split("/").map(encodeURIComponent).join("/");
const imageUrl = (path, revision) =>
  "/api/images/" + path.split("/").map(encodeURIComponent).join("/") + "?r=" + revision;

function showMessage(text, { conflict = false, info = false } = {}) {
  $("message-text").textContent = text;
  $("message").classList.toggle("info", info);
  $("reload-button").hidden = !conflict;
  $("message").hidden = false;
}

function hideMessage() {
  $("message").hidden = true;
}

// ------------------------------------------------------------------------------------------------ queue

async function loadQueue() {
  const query = state.filter ? "?status=" + encodeURIComponent(state.filter) : "";
  const data = await api("GET", "/api/queue" + query);
  state.items = data.items;
  renderProgress(data.progress);
  renderQueue();
}

function renderQueue() {
  const list = $("queue");
  list.replaceChildren();
  state.items.forEach((entry, i) => {
    const li = document.createElement("li");
    li.dataset.path = entry.path;
    li.classList.toggle("current", i === state.index);
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = entry.path.replace(/^images\//, "");
    name.title = `${entry.path} (priority ${entry.priority}, ${entry.boxes} pre-label box(es))`;
    const badge = document.createElement("span");
    badge.className = "badge " + entry.status;
    badge.textContent = entry.status;
    li.append(name, badge);
    li.addEventListener("click", () => openIndex(i));
    list.append(li);
  });
}

function renderProgress(progress) {
  const pct = progress.total ? Math.round((100 * progress.reviewed) / progress.total) : 0;
  $("progress").setAttribute("aria-valuenow", String(pct));
  $("progress-fill").style.width = pct + "%";
  $("progress-label").textContent =
    `${progress.reviewed} / ${progress.total} reviewed · accepted ${progress.accepted}` +
    ` · fixed ${progress.fixed} · rejected ${progress.rejected}`;
}

// ------------------------------------------------------------------------------------------------ items

async function openIndex(i) {
  if (i < 0 || i >= state.items.length) return;
  keepDraft();
  state.index = i;
  const item = await api("GET", itemUrl(state.items[i].path));
  showItem(item);
}

function showItem(item) {
  state.item = item;
  const draft = state.drafts.get(item.path);
  state.boxes = (draft || item.boxes).map((b) => ({ ...b }));
  state.selected = -1;
  const svg = $("canvas");
  svg.setAttribute("viewBox", `0 0 ${item.width} ${item.height}`);
  const photo = $("photo");
  photo.setAttribute("width", item.width);
  photo.setAttribute("height", item.height);
  photo.setAttribute("href", imageUrl(item.path, item.revision));
  $("position").textContent = `${state.index + 1} / ${state.items.length}`;
  $("item-path").textContent = item.path;
  $("item-status").textContent = item.status;
  $("item-status").className = "badge " + item.status;
  $("item-model").textContent = item.model ? `pre-labelled by ${item.model}` : "no pre-labels";
  const entry = state.items[state.index];
  if (entry) Object.assign(entry, { status: item.status, revision: item.revision });
  renderQueue();
  render();
}

function keepDraft() {
  if (state.item && isDirty()) state.drafts.set(state.item.path, state.boxes.map((b) => ({ ...b })));
}

function isDirty() {
  if (!state.item) return false;
  const a = state.boxes;
  const b = state.item.boxes;
  if (a.length !== b.length) return true;
  return a.some((box, i) => box.class_id !== b[i].class_id ||
    ["x1", "y1", "x2", "y2"].some((k) => Math.abs(box[k] - b[i][k]) > 0.5));
}

async function save(verdict) {
  if (!state.item) return;
  const item = state.item;
  const boxes = state.boxes.map(({ class_id, x1, y1, x2, y2 }) => ({ class_id, x1, y1, x2, y2 }));
  try {
    const saved = await api("PUT", itemUrl(item.path), { revision: item.revision, verdict, boxes });
    state.drafts.delete(item.path);
    hideMessage();
    renderProgress(saved.progress);
    state.item = null; // saved: nothing to keep as a draft
    showItem(saved);
    nextToReview();
  } catch (error) {
    if (error.status === 409) {
      keepDraft();
      showMessage(error.message, { conflict: true });
    } else {
      showMessage(error.message);
    }
  }
}

function nextToReview() {
  for (let step = 1; step <= state.items.length; step++) {
    const i = (state.index + step) % state.items.length;
    if (state.items[i].status === "queued") return openIndex(i);
  }
  showMessage("Every image in the queue is reviewed.", { info: true });
}

async function reloadItem() {
  if (!state.item) return;
  state.drafts.delete(state.item.path);
  const path = state.item.path;
  state.item = null;
  hideMessage();
  showItem(await api("GET", itemUrl(path)));
}

// ------------------------------------------------------------------------------------------------ drawing

function color(classId) {
  return COLORS[classId % COLORS.length];
}

function screenScale() {
  const m = $("canvas").getScreenCTM();
  return m ? m.a : 1;
}

function render() {
  const group = $("boxes");
  group.replaceChildren();
  const handle = HANDLE / screenScale();
  state.boxes.forEach((box, i) => {
    const g = document.createElementNS(SVG_NS, "g");
    g.setAttribute("class", "box" + (i === state.selected ? " selected" : ""));
    g.dataset.index = String(i);
    const frame = document.createElementNS(SVG_NS, "rect");
    frame.setAttribute("class", "frame");
    setRect(frame, box.x1, box.y1, box.x2 - box.x1, box.y2 - box.y1);
    frame.setAttribute("stroke", color(box.class_id));
    frame.dataset.role = "move";
    const label = document.createElementNS(SVG_NS, "text");
    label.setAttribute("x", box.x1 + 2 / screenScale());
    label.setAttribute("y", Math.max(box.y1 - 4 / screenScale(), 12 / screenScale()));
    label.setAttribute("font-size", 13 / screenScale());
    label.setAttribute("stroke-width", 3 / screenScale());
    const name = state.names[box.class_id] ?? `class ${box.class_id}`;
    label.textContent = box.confidence != null ? `${name} ${box.confidence.toFixed(2)}` : name;
    g.append(frame, label);
    if (i === state.selected) {
      for (const corner of ["nw", "ne", "sw", "se"]) {
        const h = document.createElementNS(SVG_NS, "rect");
        h.setAttribute("class", "handle");
        h.dataset.role = corner;
        const x = corner.includes("w") ? box.x1 : box.x2;
        const y = corner.includes("n") ? box.y1 : box.y2;
        setRect(h, x - handle / 2, y - handle / 2, handle, handle);
        g.append(h);
      }
    }
    group.append(g);
  });
  renderBoxList();
  $("dirty-flag").hidden = !isDirty();
  $("class-select").value = String(state.activeClass);
}

function setRect(rect, x, y, w, h) {
  rect.setAttribute("x", x);
  rect.setAttribute("y", y);
  rect.setAttribute("width", Math.max(w, 0));
  rect.setAttribute("height", Math.max(h, 0));
}

function renderBoxList() {
  const list = $("box-list");
  list.replaceChildren();
  state.boxes.forEach((box, i) => {
    const li = document.createElement("li");
    li.classList.toggle("selected", i === state.selected);
    const name = state.names[box.class_id] ?? `class ${box.class_id}`;
    li.textContent = `${name} (${Math.round(box.x1)}, ${Math.round(box.y1)}) ` +
      `${Math.round(box.x2 - box.x1)}×${Math.round(box.y2 - box.y1)}`;
    li.addEventListener("click", () => select(i));
    list.append(li);
  });
}

function select(i) {
  state.selected = i;
  if (i >= 0) state.activeClass = state.boxes[i].class_id;
  render();
}

function toImage(event) {
  const svg = $("canvas");
  const point = svg.createSVGPoint();
  point.x = event.clientX;
  point.y = event.clientY;
  const p = point.matrixTransform(svg.getScreenCTM().inverse());
  const item = state.item;
  return { x: Math.min(Math.max(p.x, 0), item.width), y: Math.min(Math.max(p.y, 0), item.height) };
}

function onPointerDown(event) {
  if (!state.item || event.button !== 0) return;
  const target = event.target;
  const p = toImage(event);
  const group = target.closest && target.closest("g.box");
  if (group && !state.drawing) {
    const i = Number(group.dataset.index);
    select(i);
    const box = state.boxes[i];
    state.drag = { kind: target.dataset.role || "move", index: i, start: p, origin: { ...box } };
  } else {
    select(-1);
    state.drag = { kind: "draw", start: p };
  }
  $("canvas").setPointerCapture(event.pointerId);
  event.preventDefault();
}

function onPointerMove(event) {
  const drag = state.drag;
  if (!drag) return;
  const p = toImage(event);
  if (drag.kind === "draw") {
    const draft = $("draft-box");
    setRect(draft, Math.min(drag.start.x, p.x), Math.min(drag.start.y, p.y),
      Math.abs(p.x - drag.start.x), Math.abs(p.y - drag.start.y));
    draft.setAttribute("visibility", "visible");
    return;
  }
  const box = state.boxes[drag.index];
  const o = drag.origin;
  const dx = p.x - drag.start.x;
  const dy = p.y - drag.start.y;
  if (drag.kind === "move") {
    const w = o.x2 - o.x1;
    const h = o.y2 - o.y1;
    box.x1 = Math.min(Math.max(o.x1 + dx, 0), state.item.width - w);
    box.y1 = Math.min(Math.max(o.y1 + dy, 0), state.item.height - h);
    box.x2 = box.x1 + w;
    box.y2 = box.y1 + h;
  } else {
    if (drag.kind.includes("w")) box.x1 = o.x1 + dx;
    if (drag.kind.includes("e")) box.x2 = o.x2 + dx;
    if (drag.kind.includes("n")) box.y1 = o.y1 + dy;
    if (drag.kind.includes("s")) box.y2 = o.y2 + dy;
  }
  delete box.confidence; // an edited box is the person's, not the model's
  render();
}

function onPointerUp(event) {
  const drag = state.drag;
  state.drag = null;
  if (!drag) return;
  if (drag.kind === "draw") {
    $("draft-box").setAttribute("visibility", "hidden");
    const p = toImage(event);
    const box = {
      class_id: state.activeClass,
      x1: Math.min(drag.start.x, p.x), y1: Math.min(drag.start.y, p.y),
      x2: Math.max(drag.start.x, p.x), y2: Math.max(drag.start.y, p.y),
    };
    if (box.x2 - box.x1 >= MIN_SIZE && box.y2 - box.y1 >= MIN_SIZE) {
      state.boxes.push(box);
      state.selected = state.boxes.length - 1;
    }
    setDrawing(false);
  } else {
    const box = state.boxes[drag.index];
    [box.x1, box.x2] = [Math.min(box.x1, box.x2), Math.max(box.x1, box.x2)];
    [box.y1, box.y2] = [Math.min(box.y1, box.y2), Math.max(box.y1, box.y2)];
  }
  render();
}

function setDrawing(on) {
  state.drawing = on;
  $("canvas").classList.toggle("drawing", on);
  $("draw-button").setAttribute("aria-pressed", String(on));
}

function deleteSelected() {
  if (state.selected < 0) return;
  state.boxes.splice(state.selected, 1);
  state.selected = -1;
  render();
}

function setClass(classId) {
  if (classId < 0 || classId >= state.names.length) return;
  state.activeClass = classId;
  if (state.selected >= 0) {
    const box = state.boxes[state.selected];
    box.class_id = classId;
    delete box.confidence;
  }
  render();
}

function resetEdits() {
  if (!state.item) return;
  state.drafts.delete(state.item.path);
  state.boxes = state.item.boxes.map((b) => ({ ...b }));
  state.selected = -1;
  render();
}

// ------------------------------------------------------------------------------------------------ keys

const KEYS = {
  a: () => save("accepted"),
  Enter: () => save("accepted"),
  f: () => save("fixed"),
  r: () => save("rejected"),
  ArrowRight: () => openIndex(state.index + 1),
  j: () => openIndex(state.index + 1),
  ArrowLeft: () => openIndex(state.index - 1),
  k: () => openIndex(state.index - 1),
  n: () => setDrawing(!state.drawing),
  Delete: deleteSelected,
  Backspace: deleteSelected,
  z: resetEdits,
  Escape: () => { setDrawing(false); select(-1); },
  Tab: () => state.boxes.length && select((state.selected + 1) % state.boxes.length),
};

function onKey(event) {
  if (event.target.tagName === "INPUT" || event.ctrlKey || event.metaKey || event.altKey) return;
  if (event.target.tagName === "SELECT" && !/^[1-9]$/.test(event.key) && event.key !== "Escape") return;
  const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
  if (/^[1-9]$/.test(key)) {
    setClass(Number(key) - 1);
    event.preventDefault();
    return;
  }
  const action = KEYS[key];
  if (action) {
    event.preventDefault();
    action();
  }
}

// ------------------------------------------------------------------------------------------------ start

async function start() {
  const summary = await api("GET", "/api/summary");
  state.names = summary.names;
  $("folder").textContent = summary.folder;
  const classSelect = $("class-select");
  summary.names.forEach((name, i) => {
    const option = document.createElement("option");
    option.value = String(i);
    option.textContent = `${i + 1}: ${name}`;
    classSelect.append(option);
  });
  classSelect.addEventListener("change", () => setClass(Number(classSelect.value)));
  const svg = $("canvas");
  svg.addEventListener("pointerdown", onPointerDown);
  svg.addEventListener("pointermove", onPointerMove);
  svg.addEventListener("pointerup", onPointerUp);
  svg.addEventListener("pointercancel", onPointerUp);
  window.addEventListener("resize", render);
  document.addEventListener("keydown", onKey);
  $("accept-button").addEventListener("click", () => save("accepted"));
  $("fix-button").addEventListener("click", () => save("fixed"));
  $("reject-button").addEventListener("click", () => save("rejected"));
  $("prev-button").addEventListener("click", () => openIndex(state.index - 1));
  $("next-button").addEventListener("click", () => openIndex(state.index + 1));
  $("draw-button").addEventListener("click", () => setDrawing(!state.drawing));
  $("delete-button").addEventListener("click", deleteSelected);
  $("reset-button").addEventListener("click", resetEdits);
  $("reload-button").addEventListener("click", reloadItem);
  $("dismiss-button").addEventListener("click", hideMessage);
  $("queue-filter").addEventListener("change", async (event) => {
    keepDraft();
    state.filter = event.target.value;
    state.index = -1;
    await loadQueue();
    if (state.items.length) openIndex(0);
  });
  window.addEventListener("beforeunload", (event) => {
    if (isDirty() || state.drafts.size) event.preventDefault();
  });
  await loadQueue();
  const first = state.items.findIndex((entry) => entry.status === "queued");
  if (state.items.length) await openIndex(first >= 0 ? first : 0);
  else showMessage("The queue is empty: run `kiln data autolabel` or add images to the folder.", { info: true });
}

start().catch((error) => showMessage(error.message));
