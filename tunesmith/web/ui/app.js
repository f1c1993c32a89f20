// tunesmith's web UI: a client of the server's own OpenAI-compatible API (/v1), nothing else.
// No build step and no framework: a hash router and one function per page. The API key entered
// on the login page is kept in sessionStorage (gone when the tab closes) and sent as a Bearer token.

const page = document.getElementById("page");
const KEY = "tunesmith.key";

// ── API ─────────────────────────────────────────────────────────────────────────────────────

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  const key = sessionStorage.getItem(KEY);
  if (key) headers.Authorization = `Bearer ${key}`;
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401) { sessionStorage.removeItem(KEY); location.hash = "#/login"; throw new Error("log in first"); }
  const body = response.headers.get("content-type")?.includes("json") ? await response.json() : await response.text();
  if (!response.ok) throw new Error(body?.error?.message || `${response.status} ${response.statusText}`);
  return body;
}

async function allPages(path) {  // OpenAI-style lists: data + has_more, continued with ?after=<last id>
  const items = [];
  let after = null;
  for (;;) {
    const sep = path.includes("?") ? "&" : "?";
    const pageOf = await api(`${path}${sep}limit=100${after ? `&after=${encodeURIComponent(after)}` : ""}`);
    items.push(...pageOf.data);
    if (!pageOf.has_more || !pageOf.data.length) return items;
    after = pageOf.data[pageOf.data.length - 1].id;
  }
}

// ── tiny DOM helpers ────────────────────────────────────────────────────────────────────────

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (value !== null && value !== undefined && value !== false) node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) node.append(child instanceof Node ? child : document.createTextNode(String(child ?? "")));
  return node;
}

function table(headers, rows) {
  return el("div", { class: "scroll" }, el("table", {},
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))),
    el("tbody", {}, rows.map((cells) => el("tr", {}, cells.map((c) => el("td", {}, c)))))));
}

const when = (seconds) => (seconds ? new Date(seconds * 1000).toLocaleString() : "-");
const statusOf = (s) => el("span", { class: `status ${s}` }, s);
function show(...nodes) { page.replaceChildren(...nodes); }
function fail(error) { show(el("p", { class: "error", role: "alert" }, error.message || String(error))); }

// ── pages ───────────────────────────────────────────────────────────────────────────────────

function loginPage() {
  const input = el("input", { type: "password", id: "api-key", autocomplete: "off", placeholder: "ts-..." });
  const message = el("p", { class: "error", role: "alert" });
  const form = el("form", {
    onsubmit: async (event) => {
      event.preventDefault();
      sessionStorage.setItem(KEY, input.value.trim());
      try { await api("/v1/models"); location.hash = "#/runs"; } catch (e) { message.textContent = "That key was not accepted."; }
    },
  }, el("label", { for: "api-key" }, "API key"), el("p", { class: "help" }, "Create one with: tunesmith keys create"),
  input, " ", el("button", { type: "submit" }, "Log in"), message);
  show(el("h1", {}, "Log in"), form);
}

async function datasetsPage() {
  const result = el("div", { id: "upload-result" });
  const listing = el("div");
  const input = el("input", { type: "file", id: "file-input", accept: ".jsonl,.json,.csv" });
  const zone = el("div", { class: "drop", id: "drop" }, "Drop a JSONL or CSV file here, or ", input);
  const upload = async (file) => {
    result.replaceChildren(el("p", {}, `uploading ${file.name} ...`));
    const form = new FormData();
    form.append("purpose", "fine-tune");
    form.append("file", file);
    try {
      const stored = await api("/v1/files", { method: "POST", body: form });
      result.replaceChildren(fileReport(stored));
      await refresh();
    } catch (e) { result.replaceChildren(el("p", { class: "error", role: "alert" }, e.message)); }
  };
  input.addEventListener("change", () => input.files[0] && upload(input.files[0]));
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => { e.preventDefault(); zone.classList.remove("over"); if (e.dataTransfer.files[0]) upload(e.dataTransfer.files[0]); });
  const cardPanel = el("div", { id: "card" });
  const models = (await allPages("/v1/models")).filter((m) => !m.id.startsWith("ft:"));
  const refresh = async () => {
    const files = await allPages("/v1/files");
    listing.replaceChildren(table(["file", "name", "bytes", "status", "uploaded", ""],
      files.map((f) => [f.id, f.filename, f.bytes.toLocaleString(), statusOf(f.status), when(f.created_at),
        el("button", { class: "secondary", "data-card": f.id, onclick: () => showCard(f.id, cardPanel, models) }, "card")])));
  };
  show(el("h1", {}, "Datasets"), zone, result, cardPanel, el("h2", {}, "Uploaded files"), listing);
  await refresh();
}

async function showCard(fileId, panel, models) {
  const select = el("select", { id: "card-model" }, el("option", { value: "" }, "no tokenizer"),
    models.map((m) => el("option", { value: m.id, selected: m === models[0] }, m.id)));
  const body = el("div", {}, "reading the file ...");
  const load = async () => {
    const query = select.value ? `?model=${encodeURIComponent(select.value)}` : "";
    body.replaceChildren(renderCard(await api(`/v1/files/${fileId}/card${query}`)));
  };
  select.addEventListener("change", load);
  panel.replaceChildren(el("h2", {}, "Dataset card"), el("p", {}, el("label", { for: "card-model" }, "Token lengths under"), select), body,
    preparePanel(fileId));
  await load();
}

function preparePanel(fileId) {  // `tunesmith data clean` and `data split` on the stored file
  const out = el("div", { id: "prepare-result" });
  const pii = el("select", { id: "clean-pii" }, ["redact", "drop", "report", "off"].map((v) => el("option", { value: v }, v)));
  const near = el("input", { type: "checkbox", id: "clean-near", checked: true });
  const roles = el("input", { type: "checkbox", id: "clean-roles" });
  const ratios = el("input", { type: "text", id: "split-ratios", value: "0.8,0.1,0.1" });
  const stratify = el("input", { type: "text", id: "split-stratify", placeholder: "e.g. label" });
  const seed = el("input", { type: "number", id: "split-seed", value: 0 });
  const post = async (action, body, render) => {
    out.replaceChildren(el("p", {}, `${action} ...`));
    try {
      render(await api(`/v1/files/${fileId}/${action}`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) }));
    } catch (e) { out.replaceChildren(el("p", { class: "error", role: "alert" }, e.message)); }
  };
  const cleaned = (r) => out.replaceChildren(
    el("p", {}, `cleaned: ${r.card.kept ?? "?"} kept, ${r.card.removed ?? "?"} removed → ${r.file.filename} (${r.file.id}) `, statusOf(r.file.status)),
    r.rejects_file ? el("button", { class: "secondary", id: "show-rejects", onclick: () => showRejects(r.rejects_file.id, out) }, "show rejects") : "");
  const splitDone = (r) => out.replaceChildren(table(["split", "file", "status"],
    Object.entries(r.files).map(([name, f]) => [name, `${f.filename} (${f.id})`, statusOf(f.status)])));
  return el("details", { id: "prepare" }, el("summary", {}, "Clean or split this file"),
    el("div", { class: "row" }, el("label", { for: "clean-pii" }, "personal data"), pii,
      el("label", {}, near, " remove near-duplicates"), el("label", {}, roles, " map role aliases"),
      el("button", { class: "secondary", id: "do-clean", onclick: () => post("clean", { pii: pii.value, dedup_near: near.checked, fix_roles: roles.checked }, cleaned) }, "clean")),
    el("div", { class: "row" }, el("label", { for: "split-ratios" }, "ratios"), ratios, el("label", { for: "split-stratify" }, "stratify by"), stratify,
      el("label", { for: "split-seed" }, "seed"), seed,
      el("button", { class: "secondary", id: "do-split", onclick: () => post("split", { ratios: ratios.value, stratify: stratify.value, seed: Number(seed.value) }, splitDone) }, "split")),
    out);
}

async function showRejects(fileId, into) {
  const text = await api(`/v1/files/${fileId}/content`);
  const lines = String(text).split("\n").filter(Boolean).map((line) => JSON.parse(line));
  into.append(el("div", { id: "rejects" }, table(["line", "action", "step", "reason"], lines.map((r) => [r.line ?? "-", r.action ?? "-", r.step ?? "-", r.reason ?? "-"]))));
}

function renderCard(found) {
  if (!found.valid) return el("ul", { class: "problems" }, found.problems.map((p) => el("li", {}, p)));
  const c = found.card;
  const facts = [["file", c.path], ["format", c.format], ["records", c.records.toLocaleString()]];
  if (c.lengths) {
    facts.push(["tokens (min / median / p95 / max)", `${c.lengths.min} / ${c.lengths.median} / ${c.lengths.p95} / ${c.lengths.max}`],
      [`longer than ${c.max_length}`, c.over_max_length], ["tokens per epoch", c.tokens_per_epoch.toLocaleString()]);
    if (c.estimated_seconds_per_epoch) facts.push(["estimated training time per epoch", `${Math.round(c.estimated_seconds_per_epoch / 60)} min`]);
  }
  const pii = Object.entries(c.personal_data);
  facts.push(["records with personal data", pii.length ? pii.map(([k, n]) => `${k}: ${n}`).join(", ") : "none found"]);
  return el("div", { class: "card-body" }, table(["", ""], facts),
    c.length_histogram.length ? el("div", { class: "chart" }, el("p", { class: "help" }, "token length histogram"), histogram(c.length_histogram)) : "",
    Object.keys(c.labels).length ? table(["label", "records"], Object.entries(c.labels)) : "",
    c.notes.map((n) => el("p", { class: "help" }, n)));
}

function histogram(bins) {
  const width = 640, height = 160, pad = 24, most = Math.max(...bins.map((b) => b.count), 1);
  const svg = (tag, attrs) => { const n = document.createElementNS("http://www.w3.org/2000/svg", tag); for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v); return n; };
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "token length histogram" });
  const bar = (width - 2 * pad) / bins.length;
  bins.forEach((b, i) => {
    const h = (b.count / most) * (height - 2 * pad);
    const rect = svg("rect", { x: pad + i * bar + 1, y: height - pad - h, width: bar - 2, height: h, fill: "#2b6cb0" });
    const tip = svg("title", {}); tip.textContent = `${b.low}-${b.high} tokens: ${b.count}`; rect.append(tip);
    root.append(rect);
  });
  for (const [x, label, anchor] of [[pad, bins[0].low, "start"], [width - pad, bins[bins.length - 1].high, "end"]]) {
    const t = svg("text", { x, y: height - 6, "font-size": 11, "text-anchor": anchor, fill: "#4a5568" }); t.textContent = label; root.append(t);
  }
  return root;
}

function fileReport(file) {
  const problems = (file.status_details || "").split("\n").filter(Boolean);
  return el("div", {},
    el("p", {}, `${file.filename}: `, statusOf(file.status)),
    problems.length ? el("ul", { class: "problems", id: "problems" }, problems.map((p) => el("li", {}, p))) : "");
}

async function runsPage() {
  const [jobs, files, models] = await Promise.all([allPages("/v1/fine_tuning/jobs"), allPages("/v1/files"),
    allPages("/v1/models")]);
  const usable = files.filter((f) => f.status === "processed");
  const base = models.filter((m) => !m.id.startsWith("ft:"));
  const fileSelect = el("select", { id: "training-file" }, usable.map((f) => el("option", { value: f.id }, `${f.filename} (${f.id})`)));
  const modelSelect = el("select", { id: "base-model" }, base.map((m) => el("option", { value: m.id }, m.id)));
  const epochs = el("input", { type: "number", id: "epochs", min: 1, max: 50, value: 1 });
  const suffix = el("input", { type: "text", id: "suffix", placeholder: "optional" });
  const message = el("p", { class: "error", role: "alert", id: "form-error" });
  // Training method: chat SFT on conversations, or DPO on preference pairs (OpenAI's method.type).
  const kind = el("select", { id: "method-type" }, el("option", { value: "supervised" }, "supervised: chat / instruction data"),
    el("option", { value: "dpo" }, "dpo: preference pairs (chosen / rejected)"));
  let settings = settingsForm(await api("/v1/tunesmith/schema/sft"));
  kind.addEventListener("change", async () => {
    const next = settingsForm(await api(`/v1/tunesmith/schema/${kind.value === "dpo" ? "dpo" : "sft"}`));
    settings.node.replaceWith(next.node);
    settings = next;
  });
  const yamlBox = el("textarea", { id: "recipe-yaml", rows: 6, placeholder: "method: dora\nlora:\n  r: 8\ntraining:\n  learning_rate: 1.0e-4" });
  const jobBody = () => JSON.stringify({ model: modelSelect.value, training_file: fileSelect.value, suffix: suffix.value || undefined,
    method: { type: kind.value, [kind.value]: { hyperparameters: { n_epochs: Number(epochs.value) } } },
    tunesmith: yamlBox.value.trim() ? { recipe_yaml: yamlBox.value } : { settings: settings.changed() } });
  const post = (path) => api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: jobBody() });
  const estimateBox = el("div", { id: "estimate" });
  // Will it fit, and how long? The same body, probed for a few real steps (jobs/estimates.py).
  const estimateButton = el("button", { type: "button", class: "secondary", id: "estimate-run", disabled: !usable.length || !base.length,
    onclick: async () => {
      settings.clearErrors();
      message.textContent = "";
      estimateButton.disabled = true;
      estimateBox.replaceChildren(el("p", { class: "help" }, "Estimating: loading the model and timing a few training steps (a minute or two)…"));
      try { estimateBox.replaceChildren(estimateTable(await post("/v1/tunesmith/estimates"))); }
      catch (e) { estimateBox.replaceChildren(); message.textContent = settings.showErrors(e.message); }
      finally { estimateButton.disabled = false; }
    } }, "Estimate");
  const form = el("form", {
    onsubmit: async (event) => {
      event.preventDefault();
      settings.clearErrors();
      message.textContent = "";
      try {
        const job = await post("/v1/fine_tuning/jobs");
        location.hash = `#/runs/${job.id}`;
      } catch (e) { message.textContent = settings.showErrors(e.message); }
    },
  },
  el("label", { for: "training-file" }, "Training data"), el("p", { class: "help" }, "A validated upload (see Datasets)."), fileSelect,
  el("label", { for: "base-model" }, "Base model"), el("p", { class: "help" }, "Models pulled into this home (tunesmith models pull)."), modelSelect,
  el("label", { for: "method-type" }, "Training method"), kind,
  el("label", { for: "epochs" }, "Epochs"), epochs,
  el("label", { for: "suffix" }, "Name suffix"), suffix,
  settings.node,
  el("details", {}, el("summary", {}, "Or paste a YAML recipe (its settings replace the form's)"), yamlBox),
  el("p", {}, el("button", { type: "submit", disabled: !usable.length || !base.length }, "Start fine-tuning"), " ", estimateButton),
  estimateBox, message);
  const runs = await allPages("/v1/tunesmith/runs");
  show(el("h1", {}, "Runs"),
    el("h2", {}, "Fine-tuning jobs"),
    jobs.length ? table(["job", "base model", "status", "fine-tuned model", "created"],
      jobs.map((j) => [el("a", { href: `#/runs/${j.id}` }, j.id), j.model, statusOf(j.status), j.fine_tuned_model || "-", when(j.created_at)]))
      : el("p", { class: "help" }, "No jobs yet: start one below."),
    el("h2", {}, "All runs"), el("p", { class: "help" }, "Every run in this home: trained by a job here, or with tunesmith train / tune on the command line."),
    runsTable(runs),
    el("h2", {}, "New run"), form);
}

function estimateTable(e) {  // the pre-flight estimate (training/estimate.py) as the CLI's table shows it
  const gib = (n) => `${(n / 2 ** 30).toFixed(2)} GiB`;
  const mins = (s) => s >= 90 ? `${(s / 60).toFixed(1)} min` : `${s.toFixed(0)} s`;
  const rows = [
    ["peak RAM", `${gib(e.peak_rss_bytes)} (${gib(e.free_ram_bytes)} free now)`],
    ...(e.peak_gpu_bytes != null ? [["peak GPU memory", `${gib(e.peak_gpu_bytes)} (${gib(e.free_gpu_bytes || 0)} free now)`]] : []),
    ["tokens per epoch", `${e.tokens_per_epoch.toLocaleString()} (${e.train_examples} examples, longest ${e.longest_example_tokens})`],
    ["optimizer steps", `${e.steps_per_epoch} per epoch, ${e.total_steps} in all`],
    ["time per epoch", `${mins(e.seconds_per_epoch)} (${e.evals_per_epoch} evaluations, ${e.saves_per_epoch} saves)`],
    ["time in all", mins(e.total_seconds)],
    ["checkpoint disk", `${gib(e.disk_bytes)} (${e.checkpoints_kept} kept)`],
    ["device", e.device]];
  return el("div", {}, table(["estimate", ""], rows),
    el("p", { class: e.fits ? "help" : "error" }, e.fits ? "It fits in the memory free now." : `It would not fit: ${e.problems.join("; ")}.`));
}

function runsTable(runs) {
  return el("div", { id: "all-runs" }, runs.length ? table(["run", "recipe", "method", "base model", "status", "trained by", "evaluation", "created"],
    runs.map((r) => [el("a", { href: `#/eval/${r.id}` }, r.id), r.recipe, r.method || "-", r.base_model, statusOf(r.status),
      r.job ? el("a", { href: `#/runs/${r.job}` }, r.job) : "command line", headline(r.evaluation), when(r.created_at)]))
    : el("p", { class: "help" }, "No runs yet."));
}

function headline(e) {  // the one figure that says how a run did on its latest evaluation
  if (e.accuracy != null) return `accuracy ${(e.accuracy * 100).toFixed(1)}%`;
  if (e.exact_match != null) return `exact match ${(e.exact_match * 100).toFixed(1)}%`;
  if (e.reward_accuracy != null) return `reward accuracy ${(e.reward_accuracy * 100).toFixed(1)}%`;
  if (e.loss != null) return `loss ${e.loss.toFixed(4)}`;
  return "not evaluated";
}

// ── a form generated from a recipe's JSON schema (tunesmith/config.py) ──────────────────────

const FORM_SECTIONS = [["", ["method"]], ["lora", null], ["training", null]];
const SKIPPED = new Set(["epochs", "threads", "strategy", "target_modules"]);  // epochs: the field above

function settingsForm(schema) {
  const inputs = [];  // [path, input, default, kind]
  const resolve = (node) => (node.$ref ? schema.$defs[node.$ref.split("/").pop()] : node);
  const field = (path, prop) => {
    const kinds = prop.anyOf ? prop.anyOf.filter((p) => p.type !== "null") : [prop];
    const main = kinds[0] || {};
    const enumValues = main.enum || prop.enum;
    let input;
    if (enumValues) input = el("select", {}, enumValues.map((v) => el("option", { value: v, selected: v === prop.default }, v)));
    else if (main.type === "boolean") input = el("input", { type: "checkbox", checked: prop.default === true });
    else if (main.type === "integer" || main.type === "number") {
      input = el("input", { type: "number", step: main.type === "integer" ? 1 : "any", value: prop.default ?? "",
        min: main.minimum ?? null, max: main.maximum ?? null, placeholder: prop.default === null ? "none" : null });
    } else return null;
    input.name = path;
    input.id = `set-${path.replace(/\./g, "-")}`;
    const kind = enumValues ? "enum" : main.type;
    inputs.push([path, input, prop.default, kind]);
    return el("div", { class: "field" }, el("label", { for: input.id }, path.split(".").pop().replace(/_/g, " ")),
      el("p", { class: "help" }, prop.description || ""), input, el("p", { class: "error field-error", "data-for": path }));
  };
  const present = FORM_SECTIONS.concat(schema.properties.preference ? [["preference", null]] : []);  // dpo's beta, loss
  const sections = present.map(([section, only]) => {
    const props = section ? resolve(schema.properties[section]).properties : schema.properties;
    const names = (only || Object.keys(props)).filter((n) => !SKIPPED.has(n));
    const fields = names.map((n) => field(section ? `${section}.${n}` : n, props[n])).filter(Boolean);
    return section ? el("details", {}, el("summary", {}, `${section} settings`), fields) : fields;
  });
  const value = ([, input, , kind]) => {
    if (kind === "boolean") return input.checked;
    if (kind === "integer" || kind === "number") return input.value === "" ? null : Number(input.value);
    return input.value;
  };
  return {
    node: el("fieldset", { id: "settings" }, el("legend", {}, "Recipe settings (defaults shown; only changes are sent)"), sections),
    changed() {  // nested object of the values that differ from their defaults
      const out = {};
      for (const entry of inputs) {
        const [path, , fallback] = entry;
        const v = value(entry);
        if (v === fallback || (v === null && fallback === undefined)) continue;
        const parts = path.split(".");
        let target = out;
        for (const part of parts.slice(0, -1)) target = target[part] ??= {};
        target[parts[parts.length - 1]] = v;
      }
      return out;
    },
    clearErrors() { for (const p of document.querySelectorAll(".field-error")) p.textContent = ""; },
    showErrors(message) {  // "invalid tunesmith.settings: training.learning_rate: ...; lora.r: ..." → beside each field
      const rest = [];
      for (const problem of message.replace(/^invalid tunesmith\.settings: /, "").split("; ")) {
        const [path, ...detail] = problem.split(": ");
        const slot = document.querySelector(`.field-error[data-for="${path}"]`);
        if (slot) slot.textContent = detail.join(": "); else rest.push(problem);
      }
      return rest.join("; ") || "Some settings are not valid: see the fields above.";
    },
  };
}

async function runPage(jobId) {
  const job = await api(`/v1/fine_tuning/jobs/${jobId}`);
  const chart = el("div", { class: "chart", id: "loss-chart" });
  const checkpoints = el("div", { id: "checkpoints" });
  const settingsNote = job.tunesmith?.settings ? el("p", { class: "help" }, `recipe settings: ${JSON.stringify(job.tunesmith.settings)}`) : "";
  const events = el("div", { class: "events" });
  const facts = el("p", { id: "job-facts" });
  const control = (action) => el("button", { class: "secondary", onclick: async () => { await api(`/v1/fine_tuning/jobs/${jobId}/${action}`, { method: "POST" }); draw(); } }, action);
  show(el("h1", {}, `Run ${jobId}`), facts, settingsNote, el("div", { class: "row" }, control("pause"), control("resume"), control("cancel")),
    el("h2", {}, "Loss"), chart, el("h2", {}, "Checkpoints"), checkpoints, el("h2", {}, "Events"), events);
  const draw = async () => {
    const [current, all] = await Promise.all([api(`/v1/fine_tuning/jobs/${jobId}`), allPages(`/v1/fine_tuning/jobs/${jobId}/events`)]);
    const metrics = all.filter((e) => e.type === "metrics" && e.data).map((e) => e.data).sort((a, b) => a.step - b.step);
    const last = metrics[metrics.length - 1];
    facts.replaceChildren(statusOf(current.status), `  base ${current.model}`,
      last ? `  step ${last.step}/${last.total_steps}` : "",
      last?.tokens_per_second ? `  ${Math.round(last.tokens_per_second)} tokens/s` : "",
      current.estimated_finish ? `  ETA ${new Date(current.estimated_finish * 1000).toLocaleTimeString()}` : "",
      current.fine_tuned_model ? `  → ${current.fine_tuned_model}` : "");
    chart.replaceChildren(lossChart(metrics));
    const saved = (await api(`/v1/fine_tuning/jobs/${jobId}/checkpoints`)).data;
    checkpoints.replaceChildren(saved.length ? table(["step", "model name (usable in the playground)", "validation loss"],
      saved.map((c) => [c.step_number, c.fine_tuned_model_checkpoint, c.metrics?.valid_loss?.toFixed?.(4) ?? "-"])) : "none yet");
    events.replaceChildren(table(["time", "level", "message"], all.map((e) => [when(e.created_at), e.level, e.message])));
    return current.status;
  };
  const status = await draw();
  if (!["succeeded", "failed", "cancelled"].includes(status)) poll(draw, 2000, `#/runs/${jobId}`);
  return job;
}

function poll(draw, ms, route) {  // refresh while the page is shown and the job is not finished
  const timer = setInterval(async () => {
    if (location.hash !== route) return clearInterval(timer);
    try {
      const status = await draw();
      if (["succeeded", "failed", "cancelled"].includes(status)) clearInterval(timer);
    } catch (e) { clearInterval(timer); }
  }, ms);
}

function lossChart(points) {
  // Hand-written SVG: two series (training, validation) on one step axis; no chart library to ship.
  const width = 640, height = 260, pad = 40;
  const svg = (tag, attrs) => { const n = document.createElementNS("http://www.w3.org/2000/svg", tag); for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v); return n; };
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "loss by step" });
  const series = [["train_loss", "#2b6cb0", "training"], ["valid_loss", "#dd6b20", "validation"]];
  const values = points.flatMap((p) => series.map(([k]) => p[k]).filter((v) => v !== undefined));
  if (!values.length) {
    const note = svg("text", { x: width / 2, y: height / 2, "text-anchor": "middle", fill: "#718096" });
    note.textContent = "no loss logged yet";
    root.append(note);
    return root;
  }
  const maxStep = Math.max(...points.map((p) => p.step), 1), lo = Math.min(...values), hi = Math.max(...values);
  const x = (step) => pad + (step / maxStep) * (width - 2 * pad);
  const y = (v) => height - pad - ((v - lo) / (hi - lo || 1)) * (height - 2 * pad);
  root.append(svg("line", { x1: pad, y1: height - pad, x2: width - pad, y2: height - pad, stroke: "#a0aec0" }),
    svg("line", { x1: pad, y1: pad, x2: pad, y2: height - pad, stroke: "#a0aec0" }));
  for (const [value, label] of [[hi, hi.toFixed(3)], [lo, lo.toFixed(3)]]) {
    const t = svg("text", { x: 4, y: y(value) + 4, "font-size": 11, fill: "#4a5568" }); t.textContent = label; root.append(t);
  }
  const stepLabel = svg("text", { x: width - pad, y: height - pad + 16, "font-size": 11, "text-anchor": "end", fill: "#4a5568" });
  stepLabel.textContent = `step ${maxStep}`;
  root.append(stepLabel);
  for (const [key, colour, name] of series) {
    const own = points.filter((p) => p[key] !== undefined);
    if (!own.length) continue;
    root.append(svg("polyline", { points: own.map((p) => `${x(p.step)},${y(p[key])}`).join(" "), fill: "none", stroke: colour, "stroke-width": 2, "data-series": name }));
    for (const p of own) root.append(svg("circle", { cx: x(p.step), cy: y(p[key]), r: 2.5, fill: colour }));
  }
  return el("div", {}, root, el("div", { class: "legend" }, series.map(([, colour, name]) => el("span", { style: `color:${colour}` }, `— ${name}`))));
}

async function playgroundPage() {
  const models = await allPages("/v1/models");
  const chats = [];
  const pane = (preferred) => {
    const select = el("select", {}, models.map((m) => el("option", { value: m.id, selected: m.id === preferred }, m.id)));
    const log = el("div", { class: "chat" });
    const chat = { select, log, messages: [] };
    chats.push(chat);
    return el("div", {}, select, log);
  };
  const tuned = models.find((m) => m.id.startsWith("ft:"));
  const panes = el("div", { class: "grid" }, pane(models[0]?.id));
  const side = el("input", { type: "checkbox", id: "side-by-side" });
  side.addEventListener("change", () => {
    if (side.checked && chats.length === 1) panes.append(pane(tuned?.id || models[0]?.id));
    if (!side.checked && chats.length === 2) { chats.pop(); panes.lastChild.remove(); }
  });
  const prompt = el("textarea", { id: "prompt", rows: 2, placeholder: "Ask something" });
  const sendButton = el("button", { type: "submit" }, "Send");
  const form = el("form", {
    onsubmit: async (event) => {
      event.preventDefault();
      const text = prompt.value.trim();
      if (!text) return;
      prompt.value = "";
      sendButton.disabled = true;
      await Promise.all(chats.map((chat) => send(chat, text))).finally(() => { sendButton.disabled = false; });
    },
  }, el("div", { class: "row" }, prompt, sendButton));
  show(el("h1", {}, "Playground"), el("p", {}, el("label", {}, side, " Side by side: the same prompt to two models")), panes, form);
}

async function send(chat, text) {
  chat.messages.push({ role: "user", content: text });
  chat.log.append(el("div", { class: "msg user" }, el("span", { class: "who" }, "you"), text));
  const answer = el("span", { class: "answer" });
  chat.log.append(el("div", { class: "msg" }, el("span", { class: "who" }, chat.select.value), answer));
  const key = sessionStorage.getItem(KEY);
  const response = await fetch("/v1/chat/completions", {
    method: "POST", headers: { "Content-Type": "application/json", ...(key ? { Authorization: `Bearer ${key}` } : {}) },
    body: JSON.stringify({ model: chat.select.value, messages: chat.messages, stream: true, max_tokens: 256 }),
  });
  if (!response.ok) { answer.textContent = `error: ${(await response.json()).error?.message}`; return; }
  const reader = response.body.getReader(), decoder = new TextDecoder();
  let buffer = "", reply = "";
  for (;;) {  // server-sent events: "data: {json}\n\n", ending with "data: [DONE]"
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    const events = buffer.split("\n\n");
    buffer = events.pop();
    for (const line of events) {
      const data = line.replace(/^data: /, "").trim();
      if (!data || data === "[DONE]") continue;
      const delta = JSON.parse(data).choices?.[0]?.delta?.content;
      if (delta) { reply += delta; answer.textContent = reply; }
    }
  }
  const asked = chat.messages.slice();
  chat.messages.push({ role: "assistant", content: reply });
  answer.parentNode.append(feedbackButtons(chat.select.value, asked, reply));
}

function feedbackButtons(model, messages, reply) {  // rate or correct an answer: it goes to the review queue
  const note = el("span", { class: "help" });
  const send = async (rating, correction) => {
    await api("/v1/tunesmith/feedback", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ model, messages, answer: reply, rating, correction }) });
    box.replaceChildren(el("span", { class: "help" }, "sent for review"));
  };
  const edit = el("textarea", { rows: 2, hidden: true, class: "correction", placeholder: "the answer it should have given" });
  const box = el("div", { class: "row feedback" },
    el("button", { class: "link", onclick: () => send(1) }, "good answer"),
    el("button", { class: "link", onclick: () => send(-1) }, "bad answer"),
    el("button", { class: "link", onclick: () => { edit.hidden = false; save.hidden = false; edit.focus(); } }, "correct it"),
    edit, note);
  const save = el("button", { class: "secondary", hidden: true, onclick: () => edit.value.trim() && send(-1, edit.value) }, "send correction");
  box.append(save);
  return box;
}

async function reviewPage() {
  const items = await allPages("/v1/tunesmith/feedback");
  const result = el("div", { id: "export-result" });
  const update = async (id, body) => {
    await api(`/v1/tunesmith/feedback/${id}`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    await reviewPage();
  };
  const rows = items.map((f) => {
    const correction = el("textarea", { rows: 2, class: "correction" }, f.correction || "");
    const prompt = f.messages.filter((m) => m.role === "user").map((m) => m.content).pop() || "";
    // A classifier's item carries a corrected label, a generator's a corrected answer.
    const fix = f.label != null ? `label: ${f.label}` : f.status === "exported" ? (f.correction || "-") : correction;
    return [prompt, f.answer, { "-1": "bad", "0": "-", "1": "good" }[f.rating], fix,
      statusOf(f.status),
      f.status === "exported" ? f.dataset_file : el("div", { class: "row" },
        el("button", { class: "secondary", onclick: () => update(f.id, { status: "accepted", correction: correction.value }) }, "accept"),
        el("button", { class: "secondary", onclick: () => update(f.id, { status: "rejected" }) }, "reject"))];
  });
  const exportButton = el("button", {
    id: "export", disabled: !items.some((f) => f.status === "accepted"),
    onclick: async () => {
      try {
        const made = await api("/v1/tunesmith/feedback/export", { method: "POST" });
        result.replaceChildren(el("p", { class: "ok" }, `${made.examples} example(s) written to ${made.file.filename} (${made.file.id}), `,
          statusOf(made.file.status), ": start a run with it on the Runs page."));
      } catch (e) { result.replaceChildren(el("p", { class: "error", role: "alert" }, e.message)); }
    },
  }, "Make a dataset from the accepted answers");
  show(el("h1", {}, "Review"), el("p", { class: "help" }, "Answers rated or corrected in the playground. Accepted ones become training data: the correction where there is one, else the answer if it was rated good."),
    table(["prompt", "answer", "rating", "correction", "status", ""], rows), el("p", {}, exportButton), result);
}

// ── evaluation: reports of `tunesmith eval`, started from here in the background, and compare ──

async function evalListPage() {
  const runs = await allPages("/v1/tunesmith/runs");
  const picked = new Set();
  const compareButton = el("button", { id: "compare", disabled: true, onclick: () => { location.hash = `#/compare/${[...picked].join(",")}`; } }, "Compare selected");
  const rows = runs.map((r) => [
    el("input", { type: "checkbox", "aria-label": `select ${r.id}`, "data-run": r.id, onchange: (e) => {
      e.target.checked ? picked.add(r.id) : picked.delete(r.id); compareButton.disabled = picked.size < 1; } }),
    el("a", { href: `#/eval/${r.id}` }, r.id), r.recipe, r.method || "-", r.base_model, statusOf(r.status), headline(r.evaluation)]);
  show(el("h1", {}, "Evaluation"),
    el("p", { class: "help" }, "Open a run to evaluate it against its baselines, or tick runs and compare their latest evaluations."),
    runs.length ? table(["", "run", "recipe", "method", "base model", "status", "latest evaluation"], rows) : el("p", {}, "No runs yet."),
    el("p", {}, compareButton));
}

async function evalPage(runId) {
  const [run, files] = await Promise.all([api(`/v1/tunesmith/runs/${runId}`), allPages("/v1/files")]);
  // Any uploaded dataset: one marked invalid only for having under 10 examples is still fine held-out data.
  const usable = files.filter((f) => f.purpose === "fine-tune");
  const dataSelect = el("select", { id: "eval-data" }, run.test_data ? el("option", { value: "" }, `the run's test data (${run.test_data})`) : "",
    usable.map((f) => el("option", { value: f.id }, `${f.filename} (${f.id})`)));
  const maxExamples = el("input", { type: "number", id: "eval-max-examples", min: 1, placeholder: "all" });
  const samples = el("input", { type: "number", id: "eval-samples", min: 0, value: 3 });
  const baselines = el("input", { type: "checkbox", id: "eval-baselines", checked: true });
  const against = el("input", { type: "text", id: "eval-against", placeholder: "run or model ids, comma-separated" });
  const message = el("p", { class: "error", role: "alert", id: "eval-error" });
  const taskPanel = el("div", { id: "eval-task" });
  const reportPanel = el("div", { id: "eval-report" });
  const start = el("button", { type: "submit", id: "start-eval", disabled: run.status !== "succeeded" }, "Evaluate");
  const form = el("form", {
    onsubmit: async (event) => {
      event.preventDefault();
      message.textContent = "";
      const body = { data_file: dataSelect.value || undefined, samples: Number(samples.value), baselines: baselines.checked,
        max_examples: maxExamples.value ? Number(maxExamples.value) : undefined };
      const others = against.value.split(",").map((v) => v.trim()).filter(Boolean);
      if (others.length) body.against = others;  // tunesmith eval --against: one more system each
      try {
        await api(`/v1/tunesmith/runs/${runId}/evaluation`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
        const route = location.hash;
        const status = await draw();
        if (status === "running") poll(draw, 2000, route);
      } catch (e) { message.textContent = e.message; }
    },
  }, el("div", { class: "row" }, el("label", { for: "eval-data" }, "held-out data"), dataSelect),
  el("div", { class: "row" }, el("label", { for: "eval-max-examples" }, "examples"), maxExamples,
    el("label", { for: "eval-samples" }, "sample outputs"), samples, el("label", {}, baselines, " baselines")),
  el("div", { class: "row" }, el("label", { for: "eval-against" }, "also compare against"), against),
  el("p", { class: "help" }, "Runs tunesmith eval in the background: the base model (plain and few-shot) for chat runs; majority class, TF-IDF and the prompted LLM for classifiers; the starting point for preference runs. The report lists, for each of them, the examples the fine-tune won, lost (first) and tied, with a paired significance test."),
  el("p", {}, start), message);
  const draw = async () => {
    const found = await api(`/v1/tunesmith/runs/${runId}/evaluation`);
    const task = found.task;
    start.disabled = run.status !== "succeeded" || task.status === "running";
    taskPanel.replaceChildren(task.status === "none" ? "" : el("div", {},
      el("p", {}, "evaluation ", statusOf(task.status), task.data_filename ? ` on ${task.data_filename}` : "",
        task.started_at ? `, started ${when(task.started_at)}` : "", task.finished_at ? `, finished ${when(task.finished_at)}` : ""),
      task.log.length ? el("pre", { class: "events", id: "eval-log" }, task.log.join("\n")) : ""));
    if (found.html && task.status !== "running") await showReport(runId, reportPanel);
    else if (!found.html) reportPanel.replaceChildren(el("p", { class: "help" }, "Not evaluated yet."));
    return task.status === "running" ? "running" : "succeeded";
  };
  const exporter = exportPanel(runId, run);
  show(el("h1", {}, `Evaluation of ${runId}`),
    el("p", {}, `${run.recipe} · ${run.method || "-"} · base ${run.base_model} · `, statusOf(run.status),
      run.job ? [" · job ", el("a", { href: `#/runs/${run.job}` }, run.job)] : " · trained on the command line"),
    el("details", { open: !run.evaluated }, el("summary", {}, "Evaluate this run"), form), taskPanel,
    el("h2", {}, "Latest report"), reportPanel, el("h2", {}, "Exports"), exporter.node);
  const route = location.hash;
  const [evaluating, exporting] = await Promise.all([draw(), exporter.draw()]);
  if (evaluating === "running") poll(draw, 2000, route);
  if (exporting === "running") poll(exporter.draw, 2000, route);
}

async function showReport(runId, panel) {
  // The report page tunesmith eval wrote (metrics vs baselines, confusion matrix, samples), shown
  // as is: one renderer for the file, the CLI and the UI. Sandboxed: it has no scripts to run.
  const html = await api(`/v1/tunesmith/runs/${runId}/evaluation/report.html`);
  const frame = el("iframe", { id: "report-frame", sandbox: "allow-same-origin", title: `evaluation report of ${runId}` });
  frame.srcdoc = html;
  frame.addEventListener("load", () => { frame.style.height = `${frame.contentDocument.documentElement.scrollHeight + 20}px`; });
  panel.replaceChildren(frame, el("p", { class: "help" }, "Also on disk: runs/", runId, "/eval/report.html, report.md, report.json."));
}

// ── export: `tunesmith export` in the background, and the run's exports with their parity ──

const GGUF_FORMATS = ["gguf", "ollama", "gguf-adapter"];  // the formats a quantisation applies to

function exportPanel(runId, run) {
  const format = el("select", { id: "export-format" });
  const quant = el("select", { id: "export-quant" });
  const quantField = el("span", {}, el("label", { for: "export-quant" }, "quantisation"), quant);
  const force = el("input", { type: "checkbox", id: "export-force" });
  const message = el("p", { class: "error", role: "alert", id: "export-error" });
  const taskPanel = el("div", { id: "export-task" });
  const listPanel = el("div", { id: "export-list" });
  const start = el("button", { type: "submit", id: "start-export", disabled: true }, "Export");
  const showQuant = () => { quantField.hidden = !GGUF_FORMATS.includes(format.value); };
  format.addEventListener("change", showQuant);
  let choices = false;
  const draw = async () => {
    const found = await api(`/v1/tunesmith/runs/${runId}/exports`);
    if (!choices) {  // what this run can become: a classifier merged or onnx, a language model merged or GGUF
      format.replaceChildren(...found.formats.map((f) => el("option", { value: f }, f)));
      quant.replaceChildren(...found.quants.map((q) => el("option", { value: q, selected: q === found.default_quant }, q)));
      showQuant();
      choices = true;
    }
    const task = found.task;
    start.disabled = run.status !== "succeeded" || task.status === "running";
    taskPanel.replaceChildren(task.status === "none" ? "" : el("div", {},
      el("p", {}, `export ${task.name} `, statusOf(task.status), task.started_at ? `, started ${when(task.started_at)}` : "",
        task.finished_at ? `, finished ${when(task.finished_at)}` : "",
        task.status === "parity_failed" ? ": written and kept, but it answers differently from the trained model (see its parity report)" : ""),
      task.log.length ? el("pre", { class: "events", id: "export-log" }, task.log.join("\n")) : ""));
    listPanel.replaceChildren(exportList(runId, found.data));
    return task.status === "running" ? "running" : "succeeded";
  };
  const form = el("form", {
    onsubmit: async (event) => {
      event.preventDefault();
      message.textContent = "";
      const body = { format: format.value, quant: GGUF_FORMATS.includes(format.value) ? quant.value : undefined, force: force.checked };
      try {
        await api(`/v1/tunesmith/runs/${runId}/exports`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
        const route = location.hash;
        if (await draw() === "running") poll(draw, 2000, route);
      } catch (e) { message.textContent = e.message; }
    },
  }, el("div", { class: "row" }, el("span", {}, el("label", { for: "export-format" }, "format"), format), quantField,
    el("label", {}, force, " replace an existing export")),
  el("p", { class: "help" }, "Runs tunesmith export in the background, then checks the export answers like the trained model on the run's evaluation data (parity). Files go to runs/", runId, "/exports/."),
  el("p", {}, start), message);
  return { node: el("div", {}, form, taskPanel, listPanel), draw };
}

function exportList(runId, items) {
  if (!items.length) return el("p", { class: "help" }, "Not exported yet.");
  const text = el("pre", { class: "events", id: "export-text", hidden: true });
  const read = async (name, file) => {
    text.hidden = false;
    text.textContent = await api(`/v1/tunesmith/runs/${runId}/exports/${encodeURIComponent(name)}/${encodeURIComponent(file)}`);
  };
  const rows = items.map((e) => {
    const p = e.parity;
    return [e.name, p ? statusOf(p.passed ? "passed" : "failed") : "not checked",
      p ? `${(p.identical * 100).toFixed(1)}% of ${p.examples}` : "-",
      el("span", { class: "files" }, e.files.map((f) => e.texts.includes(f.name)
        ? el("button", { class: "link", "data-export-file": `${e.name}/${f.name}`, onclick: () => read(e.name, f.name) }, f.name)
        : f.name).flatMap((f, i) => (i ? [", ", f] : [f]))),
      megabytes(e.bytes), when(e.created_at)];
  });
  return el("div", {}, table(["export", "parity", "identical answers", "files", "size", "written"], rows), text);
}

const megabytes = (bytes) => `${(bytes / 1e6).toLocaleString(undefined, { maximumFractionDigits: 1 })} MB`;

async function comparePage(ids) {
  const runs = ids.split(",").filter(Boolean);
  const found = await api(`/v1/tunesmith/compare?${runs.map((r) => `runs=${encodeURIComponent(r)}`).join("&")}`);
  // Runs as columns, figures as rows: reads better than a very wide table on a laptop or a phone.
  const rows = found.columns.slice(1).map((title, i) => [title, ...found.rows.map((row) => row[i + 1])]);
  show(el("h1", {}, "Compare runs"), el("p", { class: "help" }, "Latest evaluation and training figures of each run (as tunesmith compare)."),
    el("div", { id: "compare-table" }, table(["", ...found.rows.map((row) => el("a", { href: `#/eval/${row[0]}` }, row[0]))], rows)),
    el("p", {}, el("a", { href: "#/eval" }, "← choose other runs")));
}

// ── router ──────────────────────────────────────────────────────────────────────────────────

const routes = [
  [/^#\/login$/, loginPage],
  [/^#\/datasets$/, datasetsPage],
  [/^#\/runs$/, runsPage],
  [/^#\/runs\/([\w-]+)$/, runPage],
  [/^#\/eval$/, evalListPage],
  [/^#\/eval\/([\w.-]+)$/, evalPage],
  [/^#\/compare\/([\w.,-]+)$/, comparePage],
  [/^#\/playground$/, playgroundPage],
  [/^#\/review$/, reviewPage],
];

async function route() {
  const hash = location.hash || "#/runs";
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", hash.startsWith(`#/${a.dataset.page}`));
  document.getElementById("logout").hidden = !sessionStorage.getItem(KEY);
  for (const [pattern, render] of routes) {
    const match = hash.match(pattern);
    if (match) {
      try { await render(...match.slice(1)); } catch (e) { if (location.hash !== "#/login") fail(e); }
      return;
    }
  }
  location.hash = "#/runs";
}

document.getElementById("logout").addEventListener("click", () => { sessionStorage.removeItem(KEY); location.hash = "#/login"; });
window.addEventListener("hashchange", route);
route();
