// The explorer page: talks to the JSON API of `mgmrn serve`; no framework, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { info: null, imageId: null, imageName: null, lastAdded: null, chosenAttribute: null,
  uploading: null, rerankAfterUpload: false };
const plural = (n, one, many = one + "s") => `${n} ${n === 1 ? one : many}`;

// The message sits in a sticky bar: it is seen whichever control, however low, caused it.
let messageTimer = null;
function showMessage(text, kind = "error") {
  const box = $("message");
  clearTimeout(messageTimer);  // a notice's timer must not hide a later error
  $("message-text").textContent = text;
  box.className = "message " + (kind === "info" ? "info" : "");
  box.scrollIntoView({ block: "nearest" });
  if (kind === "info") messageTimer = setTimeout(() => box.classList.add("hidden"), 4000);
}
function clearMessage() { clearTimeout(messageTimer); $("message").classList.add("hidden"); }
$("message-close").addEventListener("click", clearMessage);

// Requests in flight, counted so that the page says when it is busy (main's aria-busy).
let pending = 0;
async function tracked(work) {
  pending += 1;
  $("main").setAttribute("aria-busy", "true");
  try {
    return await work();
  } finally {
    pending -= 1;
    $("main").setAttribute("aria-busy", String(pending > 0));
  }
}

// One request of each kind is current; a newer one aborts the older, whose answer is dropped.
const current = { rank: null, attention: null };
function renew(kind) {
  if (current[kind]) current[kind].abort();
  current[kind] = new AbortController();
  return current[kind].signal;
}
const aborted = (err, signal) => err.name === "AbortError" || signal.aborted;

async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new Error("the server cannot be reached (" + err.message + "); is mgmrn serve running?");
  }
  const kind = response.headers.get("Content-Type") || "";
  const body = kind.includes("json") ? await response.json() : await response.blob();
  if (!response.ok) throw new Error((body && body.error) || ("the server answered " + response.status));
  return body;
}

function element(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  for (const child of children) node.append(child);
  return node;
}
const badge = (group) => element("span", { className: "badge " + group, textContent: group });

// ---- tabs -------------------------------------------------------------------------------
for (const tab of document.querySelectorAll(".tab")) {
  tab.addEventListener("click", () => {
    for (const t of document.querySelectorAll(".tab")) t.classList.toggle("active", t === tab);
    for (const panel of document.querySelectorAll(".panel")) {
      panel.classList.toggle("hidden", panel.id !== tab.dataset.tab);
    }
    if (tab.dataset.tab === "run") loadRun();
  });
}

// ---- model info ---------------------------------------------------------------------------
async function loadInfo() {
  const info = await api("/api/info");
  state.info = info;
  renderHeader();
  $("gamma").placeholder = info.gamma.toFixed(2);
  $("calibration").textContent = `Calibration: γ = ${info.gamma.toFixed(2)}, ${info.gamma_source}; ` +
    "type another γ to override.";
  $("tab-run").classList.toggle("hidden", !info.run);
  const select = $("attention-select");
  select.replaceChildren(...info.attributes.map((name, i) => element("option", { value: i, textContent: name })));
  buildSliders();
  renderAdded();
}

function renderHeader() {
  const info = state.info;
  const groups = { seen: 0, unseen: 0, added: 0 };
  for (const c of info.classes) groups[c.group] += 1;
  const epoch = info.epoch === null ? "" : `, epoch ${info.epoch} of ${info.epochs}`;
  $("model-info").textContent = `${info.model} on ${info.dataset}${epoch}: ${groups.seen} seen, ` +
    `${groups.unseen} unseen, ${plural(groups.added, "added class", "added classes")}, ` +
    plural(info.attributes.length, "attribute");
}

// ---- classify -----------------------------------------------------------------------------
const GROUPS = ["seen", "unseen", "added"];
function classSets() { return GROUPS.filter((s) => $("set-" + s).checked).join(","); }
function rankQuery() {
  const q = new URLSearchParams({ top_k: $("top-k").value || "5", classes: classSets() });
  if ($("gamma").value.trim() !== "") q.set("gamma", $("gamma").value.trim());
  return q;
}
const NO_GROUP = "Tick at least one class group (seen, unseen, added) to search.";
function noGroupChosen() {
  const none = classSets() === "";
  $("sets-note").classList.toggle("hidden", !none);
  if (none) showMessage(NO_GROUP);
  else if ($("message-text").textContent === NO_GROUP) clearMessage();
  return none;
}

// The status line after a pick that was not shown: it names that file, then what is shown.
function refused(file) {
  $("status").textContent = state.imageName ?
    `${file.name} was refused; the results below are still those of ${state.imageName}.` :
    `${file.name} was refused; no prediction yet.`;
}

async function upload(file) {
  clearMessage();
  if (!file) return;
  if (noGroupChosen()) { refused(file); return; }
  if (state.info && file.size > state.info.max_upload) {
    refused(file);
    showMessage(`'${file.name}' is ${(file.size / 2 ** 20).toFixed(1)} MB, more than the ` +
      `${(state.info.max_upload / 2 ** 20).toFixed(0)} MB the server accepts; send a smaller image.`);
    return;
  }
  // The map shown stays that of the image shown, and its request goes on, until the new image
  // is accepted: a refused pick must leave a table and a map of the same image.
  const signal = renew("rank");
  state.uploading = signal;
  $("status").textContent = `Classifying ${file.name}...`;
  const q = rankQuery();
  q.set("name", file.name);
  await tracked(async () => {
    try {
      const result = await api("/api/predict?" + q, { method: "POST", body: file, signal,
        headers: { "Content-Type": "application/octet-stream" } });
      if (signal.aborted) return;
      state.imageId = result.id;
      state.imageName = file.name;
      const preview = $("preview");
      preview.src = URL.createObjectURL(file);
      preview.classList.remove("hidden");
      $("drop-text").classList.add("hidden");
      showResult(result);
    } catch (err) {
      if (aborted(err, signal)) return;
      refused(file);
      showMessage(err.message);
      if (state.imageId && state.info.attention && !$("attention-box").classList.contains("hidden") &&
          $("attention-img").dataset.image !== state.imageId) {
        showAttention(state.chosenAttribute);  // a map lost on the way: the shown image's again
      }
    } finally {
      if (state.uploading === signal) {
        state.uploading = null;
        // a control changed while the pick loaded: its image is ranked again with it
        if (state.rerankAfterUpload) { state.rerankAfterUpload = false; rerank(); }
      }
    }
  });
}

async function rerank() {
  if (state.uploading && !state.uploading.aborted) {  // a pick is loading: not dropped, ranked again once shown
    state.rerankAfterUpload = true;
    return;
  }
  if (noGroupChosen()) { renew("rank"); return; }  // and an older re-ranking is dropped
  if (!state.imageId) return;
  const signal = renew("rank");
  await tracked(async () => {
    try {
      const result = await api(`/api/predict/${state.imageId}?` + rankQuery(), { method: "POST", signal });
      if (!signal.aborted) showResult(result);
    } catch (err) {
      if (aborted(err, signal)) return;
      $("status").textContent = `The change was refused; the results below are still those shown before it (${state.imageName}).`;
      showMessage(err.message);
    }
  });
}
const fixed = (value, digits = 2) => (typeof value === "number" ? value.toFixed(digits) : "n/a");

function showResult(result) {
  clearMessage();
  $("status").textContent = `${result.image}: ${plural(result.searched, "class", "classes")} searched.`;
  const rows = result.classes.map((c) => element("tr", { className: "pred-row" + (c.group === "added" ? " added-class" : "") }, [
    element("td", { textContent: c.rank }),
    element("td", { className: "class-name", textContent: c.name }),
    element("td", {}, [badge(c.group)]),
    element("td", { className: "num", textContent: fixed(c.score) }),
    element("td", { className: "num" }, [
      element("span", { className: "bar", style: `width:${Math.max(2, 120 * c.probability)}px` }),
      (100 * c.probability).toFixed(1) + "%"]),
  ]));
  $("predictions").querySelector("tbody").replaceChildren(...rows);
  $("predictions").classList.remove("hidden");
  $("predictions").dataset.image = result.id;
  const cal = result.calibration;
  $("calibration").textContent = `Calibration: γ = ${fixed(cal.gamma)}, ${cal.source}.`;
  const ranks = result.added.map((c) => `${c.name}: rank ${c.rank} of ${result.searched}`);
  $("added-ranks").textContent = ranks.length ? "Added classes: " + ranks.join("; ") : "";
  $("define-rank").textContent = ranks.length && state.imageName ?
    `On ${state.imageName}: ` + ranks.join("; ") : "";
  const chips = result.attributes.map((a) => {
    const chip = element("button", { type: "button", className: "chip", title: "show its attention",
      textContent: `${a.name} ${a.value.toFixed(2)}` });
    chip.dataset.index = a.index;
    chip.addEventListener("click", () => showAttention(a.index));
    return element("li", {}, [chip]);
  });
  $("attributes").replaceChildren(...chips);
  if (state.info.attention && result.attributes.length) {
    $("attention-box").classList.remove("hidden");
    showAttention(state.chosenAttribute ?? result.attributes[0].index);
  }
}

async function showAttention(index) {
  const id = state.imageId;
  state.chosenAttribute = Number(index);
  $("attention-select").value = String(index);
  for (const chip of $("attributes").querySelectorAll(".chip")) {
    const chosen = Number(chip.dataset.index) === state.chosenAttribute;
    chip.classList.toggle("chosen", chosen);
    chip.setAttribute("aria-pressed", String(chosen));
  }
  const signal = renew("attention");
  await tracked(async () => {
    try {
      const png = await api(`/api/attention/${id}?attribute=${index}`, { signal });
      if (signal.aborted || id !== state.imageId) return;  // an answer for an image no longer shown
      const img = $("attention-img");
      img.src = URL.createObjectURL(png);
      img.dataset.image = id;
      img.dataset.attribute = String(index);
    } catch (err) { if (!aborted(err, signal)) showMessage(err.message); }
  });
}

const drop = $("drop-zone");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  upload(e.dataTransfer.files[0]);
});
drop.addEventListener("keydown", (e) => {  // the drop zone is a button for the keyboard
  if (e.key !== "Enter" && e.key !== " ") return;
  e.preventDefault();
  $("file-input").click();
});
$("file-input").addEventListener("change", (e) => {
  upload(e.target.files[0]);
  e.target.value = "";  // picking the same file again is a change too
});
for (const id of ["top-k", "gamma", "set-seen", "set-unseen", "set-added"]) $(id).addEventListener("change", rerank);
$("attention-select").addEventListener("change", (e) => showAttention(e.target.value));

// ---- define a class -------------------------------------------------------------------------
function buildSliders() {
  const [low, high] = state.info.attribute_range;
  const step = (high - low) / 100 || 0.01;
  const rows = state.info.attributes.map((name, i) => {
    const value = element("span", { className: "value", textContent: "0" });
    const input = element("input", { type: "range", min: low, max: high, step, value: 0, id: "slider-" + i });
    input.dataset.name = name;
    input.addEventListener("input", () => { value.textContent = Number(input.value).toFixed(2); });
    return element("div", { className: "slider" }, [element("label", { htmlFor: input.id, textContent: name }), input, value]);
  });
  $("sliders").replaceChildren(...rows);
}
$("attr-search").addEventListener("input", (e) => {
  const words = e.target.value.toLowerCase().split(/\s+/).filter(Boolean);
  for (const row of $("sliders").children) {
    const name = row.querySelector("input").dataset.name.toLowerCase();
    row.classList.toggle("hidden", !words.every((w) => name.includes(w)));
  }
});

async function addClass(request) {
  clearMessage();
  request.name = $("new-name").value.trim();
  await tracked(async () => {
    try {
      const result = await api("/api/classes", { method: "POST", body: JSON.stringify(request),
        headers: { "Content-Type": "application/json" } });
      state.info.classes = result.classes;
      state.lastAdded = result.added.name;
      renderAdded();
      await rerank();
      showMessage(`Added class '${result.added.name}'.`, "info");
    } catch (err) { showMessage(err.message); }
  });
}
$("add-class").addEventListener("click", () => {
  const attributes = {};
  for (const input of $("sliders").querySelectorAll("input")) attributes[input.dataset.name] = Number(input.value);
  addClass({ attributes });
});
$("add-paste").addEventListener("click", () => addClass({ row: $("paste-row").value }));

function renderAdded() {
  renderHeader();
  const added = state.info.classes.filter((c) => c.group === "added");
  const items = added.map((c) => {
    const remove = element("button", { className: "small", textContent: "remove" });
    remove.addEventListener("click", () => tracked(async () => {
      try {
        // by query, not path: a class named "." or ".." would be a path's dot segment
        const result = await api("/api/classes?" + new URLSearchParams({ name: c.name }), { method: "DELETE" });
        state.info.classes = result.classes;
        renderAdded();
        await rerank();
      } catch (err) { showMessage(err.message); }
    }));
    return element("li", {}, [badge("added"), " " + c.name, remove]);
  });
  $("added-list").replaceChildren(...(items.length ? items : [element("li", { className: "note", textContent: "none yet" })]));
}

// ---- the run ----------------------------------------------------------------------------
let runTimer = null;
async function loadRun() {
  clearTimeout(runTimer);
  try {
    const run = await api("/api/run");
    const r = run.results;
    const cells = r ? [["CZSL", r.czsl_acc], ["GZSL S", r.gzsl_seen], ["GZSL U", r.gzsl_unseen],
      ["GZSL H", r.gzsl_h], ["AUSUC", r.ausuc]] : [];
    const summary = element("table", { className: "summary" }, [element("tr", {}, cells.map(([k, v]) =>
      element("td", {}, [element("strong", { textContent: k + " " }), v === null ? "n/a" : v.toFixed(1)])))]);
    $("run-summary").replaceChildren(element("h2", { textContent: `Run ${run.folder} (${plural(run.epochs, "epoch")} logged)` }),
      r ? summary : element("p", { className: "note", textContent: "No results.json yet." }),
      r && typeof r.gamma === "number" ? element("p", { className: "note", textContent: `γ = ${r.gamma.toFixed(2)}, ${r.calibration}` }) : "");
    if (!$("run-figures").children.length) {
      $("run-figures").replaceChildren(...run.figures.map((f) => element("img", { src: "/api/run/figure/" + f, alt: f })));
    }
    const c = run.confusions;
    $("confusion-status").textContent = `Top ${c.pairs.length} (${c.status}).`;
    $("confusions").querySelector("tbody").replaceChildren(...c.pairs.map((p) => element("tr", {}, [
      element("td", { textContent: p.true }), element("td", { textContent: p.predicted }),
      element("td", { className: "num", textContent: `${p.count} (${(100 * p.share).toFixed(0)}%)` }),
      element("td", {}, p.examples.map((u) => element("img", { src: u, alt: p.true }))),
    ])));
    if (c.status.startsWith("computing") || c.status === "not computed") runTimer = setTimeout(loadRun, 1500);
  } catch (err) { showMessage(err.message); }
}

loadInfo().catch((err) => showMessage(err.message));
