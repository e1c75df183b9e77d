// The dashboard page: plain DOM, no framework, no build step. Every value from the server is
// put into the page as text (textContent, text nodes): job names are user input.
"use strict";

const $ = (id) => document.getElementById(id);
const PAGE = 50;
const TERMINAL = ["COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"];
let meta = { refresh_interval: 2, states: [], schedulers: [], allow_cancel: false };
let offset = 0;
let timers = [];
let logOffset = 0;
let shownJob = null;

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === null || v === undefined) continue;
    if (k === "text") node.textContent = String(v);
    else if (k === "className") node.className = v;
    else node.setAttribute(k, String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function badge(value, extra) {
  return el("span", { className: "state s-" + String(value).replace(/[^A-Za-z]/g, ""),
                      text: value, title: extra || null });
}

function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (isNaN(d)) return String(iso);
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ` +
         `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "";
  if (seconds < 60) return seconds.toFixed(1) + "s";
  const m = Math.floor(seconds / 60), s = Math.floor(seconds % 60);
  return m < 60 ? `${m}m ${String(s).padStart(2, "0")}s` : `${Math.floor(m / 60)}h ${m % 60}m`;
}

async function getJSON(url, options) {
  const r = await fetch(url, Object.assign({ credentials: "same-origin" }, options || {}));
  let body = null;
  try { body = await r.json(); } catch (e) { body = null; }
  if (!r.ok) throw new Error((body && body.error) || `${r.status} ${r.statusText}`);
  return body;
}

function setStatus(text, bad) {
  const s = $("status");
  s.textContent = text;
  s.className = bad ? "error" : "muted";
}

function replaceRows(tbody, rows) {
  tbody.replaceChildren(...rows);
}

// ---- lab -------------------------------------------------------------------------------------
async function loadBoxes() {
  const data = await getJSON("/api/boxes");
  replaceRows($("boxes").tBodies[0], data.boxes.map((b) => {
    const smoke = b.smoke;
    const release = b.hash
      ? el("span", { className: "mono release", text: b.hash.slice(0, 12), title: b.release })
      : el("span", { className: "muted release", text: b.error ? "unreadable" : (b.awake ? "none" : "—"),
                     title: b.error || null });
    return el("tr", { "data-box": b.name },
      el("td", { text: b.name, title: (b.aliases || []).join(", ") || null }),
      el("td", {}, badge(b.awake ? "awake" : "asleep")),
      el("td", { className: "mono", text: b.transport === "local" ? "this machine" : `${b.address}:${b.port}` }),
      el("td", { text: b.gpu_type === "NONE" ? "—" : `${b.gpu_count}× ${b.gpu_type}` }),
      el("td", {}, release),
      el("td", { className: "switched", text: when(b.switched_at) }),
      el("td", { className: "smoke" }, smoke ? badge(smoke.status, smoke.reason) : el("span", { className: "muted", text: "no report" }),
         smoke ? el("span", { className: "muted", text: " " + when(smoke.at) }) : null));
  }));
  const reg = data.registry, box = $("registry");
  if (!reg.configured) {
    box.replaceChildren(el("span", { className: "muted", text: "no registry configured" }));
  } else if (reg.error) {
    box.replaceChildren(el("div", { className: "error", text: reg.error }));
  } else {
    box.replaceChildren(el("div", { className: "mono", text: reg.url }),
      reg.repositories.length
        ? el("ul", { className: "repos" }, ...reg.repositories.map((r) =>
            el("li", {}, el("span", { className: "mono", text: r.name }), ": ", (r.tags || []).join(", ") || "(no tags)")))
        : el("span", { className: "muted", text: "no images" }));
  }
}

// ---- jobs ------------------------------------------------------------------------------------
function filterQuery() {
  const q = new URLSearchParams({ limit: PAGE, offset });
  if ($("f-state").value) q.set("state", $("f-state").value);
  if ($("f-scheduler").value) q.set("scheduler", $("f-scheduler").value);
  return q.toString();
}

async function loadJobs() {
  const data = await getJSON("/api/jobs?" + filterQuery());
  replaceRows($("jobs").tBodies[0], data.jobs.map((j) =>
    el("tr", { "data-job-id": j.job_id },
      el("td", { className: "mono" }, el("a", { href: "#/jobs/" + encodeURIComponent(j.job_id), text: j.job_id })),
      el("td", { className: "name", text: j.name }),
      el("td", { text: j.scheduler }),
      el("td", { className: "state-cell" }, badge(j.state)),
      el("td", { text: when(j.submitted_at) }),
      el("td", { text: duration(j.elapsed) }),
      el("td", { className: "muted", text: j.message || "" }))));
  const end = Math.min(data.offset + data.jobs.length, data.total);
  $("range").textContent = data.total ? `${data.offset + 1}–${end} of ${data.total}` : "no jobs";
  $("prev").disabled = data.offset === 0;
  $("next").disabled = end >= data.total;
  const errs = Object.entries(data.backend_errors || {});
  $("backend-errors").replaceChildren(...errs.map(([name, msg]) =>
    el("div", { className: "error", text: `${name}: ${msg}` })));
  setStatus(data.refreshed_at ? "states as of " + when(data.refreshed_at) : "live");
}

// ---- one job ---------------------------------------------------------------------------------
function fields(dl, pairs) {
  dl.replaceChildren(...pairs.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
}

async function loadJob(id) {
  const j = await getJSON("/api/jobs/" + encodeURIComponent(id));
  if (shownJob !== id) return;
  $("job-name").textContent = j.name;
  $("job-state").replaceChildren(badge(j.state));
  fields($("job-fields"), [["job id", j.job_id], ["scheduler", `${j.scheduler} (${j.scheduler_type})`],
    ["native id", j.native_id], ["submitted", `${when(j.submitted_at)} by ${j.submitted_by}`],
    ["elapsed", duration(j.elapsed)], ["node", j.node || ""], ["message", j.message || ""],
    ["plan", j.plan.kind || ""], ["argv", (j.plan.argv || []).join(" ")]]);
  const d = j.definition || {}, r = d.resources || {};
  fields($("job-definition"), [["type", d.type || ""], ["source", d.source || ""],
    ["class", d.model_class || ""], ["inputs", JSON.stringify(d.inputs || [])],
    ["gpu", `${r.gpu_count || 0}× ${r.gpu_type || "NONE"}`], ["cpus", r.cpu_cores],
    ["memory", (r.memory_mb || "") + " MB"], ["timeout", duration(d.timeout)], ["seed", d.seed],
    ["env", Object.entries(d.environment || {}).map(([k, v]) => `${k}=${v}`).join(" ")],
    ["secret env", (d.secret_env || []).map((n) => n + "=***").join(" ")]]);
  $("job-timeline").replaceChildren(...j.timeline.map((e) =>
    el("li", {}, el("span", { className: "mono", text: when(e.at) }), " ", e.event)));
  const cancel = $("cancel");
  cancel.hidden = !j.can_cancel;
  const res = j.result;
  if (res && !res.error) {
    $("job-mlir").textContent = res.mlir_head || "(no StableHLO written)";
    $("job-mlir").className = res.mlir_head ? "" : "muted";
    $("mlir-lines").textContent = res.mlir_lines ? `first ${Math.min(40, res.mlir_lines)} of ${res.mlir_lines} lines` : "";
    $("job-artifacts").replaceChildren(...(res.artifacts.length ? res.artifacts.map((a) =>
      el("li", { className: "mono", text: a })) : [el("li", { className: "muted", text: "none" })]));
  } else if (res && res.error) {
    $("job-mlir").textContent = "result unavailable: " + res.error;
  }
  return j;
}

async function followLogs(id) {
  const data = await getJSON(`/api/jobs/${encodeURIComponent(id)}/logs?offset=${logOffset}`);
  if (shownJob !== id) return true;
  const pre = $("job-logs");
  const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
  if (data.truncated) pre.textContent = "… (earlier output not shown)\n";
  if (data.text) pre.append(document.createTextNode(data.text));
  if (atEnd) pre.scrollTop = pre.scrollHeight;
  logOffset = data.offset;
  $("log-state").textContent = data.done ? "(complete)" : "(following)";
  return data.done;
}

// ---- routing and polling ---------------------------------------------------------------------
function every(seconds, fn) {
  let stopped = false;
  const tick = async () => {
    if (stopped) return;
    let again = true;
    try { again = (await fn()) !== false; } catch (e) { setStatus(String(e.message || e), true); }
    if (again && !stopped) timers.push(setTimeout(tick, seconds * 1000));
  };
  tick();
  timers.push({ stop: () => { stopped = true; } });
}

function stopAll() {
  for (const t of timers) (t && t.stop) ? t.stop() : clearTimeout(t);
  timers = [];
}

function route() {
  stopAll();
  const m = location.hash.match(/^#\/jobs\/(.+)$/);
  if (m) {
    const id = decodeURIComponent(m[1]);
    shownJob = id;
    logOffset = 0;
    $("job-logs").textContent = "";
    $("job-mlir").textContent = "(when the job has finished)";
    $("job-artifacts").replaceChildren();
    $("home").hidden = true;
    $("job").hidden = false;
    every(Math.max(1, meta.refresh_interval), async () => {
      const j = await loadJob(id);
      return !(j && TERMINAL.includes(j.state) && j.result && !j.result.error);
    });
    every(Math.max(1, meta.refresh_interval), async () => !(await followLogs(id)));
  } else {
    shownJob = null;
    $("job").hidden = true;
    $("home").hidden = false;
    every(Math.max(1, meta.refresh_interval), loadJobs);
    every(5, loadBoxes);
  }
}

async function start() {
  try { meta = await getJSON("/api/meta"); } catch (e) { setStatus(String(e.message || e), true); }
  for (const s of meta.states) $("f-state").append(el("option", { value: s, text: s }));
  for (const s of meta.schedulers) $("f-scheduler").append(el("option", { value: s, text: s }));
  const reload = () => { offset = 0; stopAll(); route(); };
  $("f-state").addEventListener("change", reload);
  $("f-scheduler").addEventListener("change", reload);
  $("prev").addEventListener("click", () => { offset = Math.max(0, offset - PAGE); stopAll(); route(); });
  $("next").addEventListener("click", () => { offset += PAGE; stopAll(); route(); });
  $("cancel").addEventListener("click", async () => {
    if (!shownJob || !confirm("Cancel job " + shownJob + "?")) return;
    try {
      await getJSON(`/api/jobs/${encodeURIComponent(shownJob)}/cancel`,
                    { method: "POST", headers: { "X-Warpforge-Action": "cancel" } });
    } catch (e) { setStatus(String(e.message || e), true); }
  });
  window.addEventListener("hashchange", route);
  route();
}

document.addEventListener("DOMContentLoaded", start);
