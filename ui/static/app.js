// Sluice's web UI: plain JavaScript, no build step. It calls the same
// Connect API as the CLI (JSON over POST, the key in the Authorization
// header) and reads live job updates from /v1/jobs/{id}/events.
"use strict";

const $ = (id) => document.getElementById(id);
const store = window.sessionStorage;

// el builds an element; children are nodes or text (never parsed as HTML).
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k === "style") e.style.cssText = v; // CSSOM: allowed by the CSP, unlike a style attribute
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

function key() { return store.getItem("sluice.key") || ""; }

class RPCError extends Error {
  constructor(code, message, retryAfter, headers) {
    super(message);
    this.code = code;
    this.retryAfter = retryAfter;
    // A CHALLENGE rule's refusal names its challenge in headers (docs/limits.md).
    this.challenge = headers && headers.get("Sluice-Challenge") ? {
      token: headers.get("Sluice-Challenge"), rule: headers.get("Sluice-Challenge-Rule"),
      kind: headers.get("Sluice-Challenge-Kind"), difficulty: Number(headers.get("Sluice-Challenge-Difficulty") || 0),
    } : null;
  }
}

// rpc calls a Connect method with JSON.
async function rpc(service, method, body) {
  const r = await fetch(`/sluice.v1.${service}/${method}`, {
    method: "POST",
    headers: { "Content-Type": "application/json", "Authorization": "Bearer " + key() },
    body: JSON.stringify(body || {}),
  });
  const text = await r.text();
  let data = {};
  try { data = text ? JSON.parse(text) : {}; } catch (_) { data = { message: text }; }
  if (!r.ok) throw new RPCError(data.code || String(r.status), data.message || r.statusText, r.headers.get("Retry-After"), r.headers);
  return data;
}

// watchJob reads a job's server-sent events until it ends or signal aborts.
// Consistent, as the job list: through the leader, whose are the place in
// line's ETA and the progress (a follower's own replica has neither).
async function watchJob(id, onJob, signal) {
  const r = await fetch(`/v1/jobs/${encodeURIComponent(id)}/events?consistent=true`, { headers: { "Authorization": "Bearer " + key() }, signal });
  if (!r.ok || !r.body) return;
  const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    let i;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const chunk = buf.slice(0, i);
      buf = buf.slice(i + 2);
      let event = "", data = "";
      for (const line of chunk.split("\n")) {
        if (line.startsWith("event: ")) event = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      if (event === "job") onJob(JSON.parse(data));
    }
  }
}

const stateName = (s) => (s || "").replace("JOB_STATE_", "");
const final = (s) => !["QUEUED", "RUNNING", ""].includes(stateName(s));
function clock(ts) { return ts ? new Date(ts).toLocaleTimeString() : "-"; }
function until(ts) {
  if (!ts) return "";
  const s = Math.max(0, Math.round((new Date(ts) - Date.now()) / 1000));
  if (s < 90) return `${s}s`;
  if (s < 5400) return `${Math.round(s / 60)}m`;
  return `${Math.round(s / 3600)}h`;
}
// bar is a horizontal bar of used/limit; a limit's bar turns amber near
// it and red at it, a plain one (counts) stays blue.
function bar(used, limit, plain) {
  const f = limit > 0 ? Math.min(1, used / limit) : 0;
  const hot = plain ? "" : f >= 1 ? " full" : f >= 0.8 ? " hot" : "";
  return el("div", { class: "bar" + hot }, el("div", { style: `width:${(f * 100).toFixed(1)}%` }));
}

// ---- user view ----

const jobs = new Map(); // id → job
const watching = new Map(); // id → AbortController
const maxWatches = 6;

function jobRow(j) {
  const st = stateName(j.state);
  const pos = st === "QUEUED" ? String(j.queuePosition || "-") : "-";
  const band = Number(j.etaP90Seconds || 0) > Number(j.etaP10Seconds || 0) ? ` (${j.etaP10Seconds || 0}–${j.etaP90Seconds}s)` : "";
  const eta = j.etaUnknown && st === "QUEUED" ? el("span", { title: "this server cannot tell: the executors are the leader's" }, "?")
    : !final(j.state) && j.etaSeconds !== undefined ? `${j.etaSeconds}s${band}` : "-";
  // The run time the leader predicts (protojson durations are "3.2s").
  const p = j.prediction, secs = (d) => parseFloat(d || "0").toFixed(1);
  const runBand = p && secs(p.p10) !== secs(p.p90) ? ` (${secs(p.p10)}–${secs(p.p90)})` : ""; // none where runs have not varied
  const run = p && !final(j.state) ? el("span", { title: p.sized ? "predicted from the job's input" : "the model's average" },
    `${secs(p.run)}s${runBand}${p.sized ? "" : " avg"}`) : "-";
  const prog = st === "RUNNING" ? el("span", {}, bar(j.progress || 0, 1), j.progressText || "") : (st === "QUEUED" && j.waitingReason ? el("span", { class: "muted" }, j.waitingReason) : "");
  const cancel = final(j.state) ? "" : el("button", { class: "small quiet", type: "button", onclick: () => cancelJob(j.id) }, "Cancel");
  let state = el("span", { class: "state " + st }, st);
  if (j.error && final(j.state)) state = el("span", {}, state, " ", el("span", { class: "muted" }, j.error.code));
  return el("tr", { "data-job": j.id }, el("td", {}, j.id), el("td", {}, j.spec ? j.spec.model : ""), el("td", {}, state),
    el("td", { class: "pos" }, pos), el("td", { class: "eta" }, eta), el("td", { class: "run" }, run), el("td", {}, prog), el("td", {}, clock(j.createdAt)), el("td", {}, cancel));
}

function renderJobs() {
  const ids = [...jobs.keys()].sort((a, b) => Number(b) - Number(a)).slice(0, 50);
  $("jobs").tBodies[0].replaceChildren(...ids.map((id) => jobRow(jobs.get(id))));
}

function watchActive() {
  for (const [id, j] of jobs) {
    if (final(j.state) || watching.has(id) || watching.size >= maxWatches) continue;
    const ac = new AbortController();
    watching.set(id, ac);
    watchJob(id, (job) => { jobs.set(job.id, job); renderJobs(); }, ac.signal)
      .catch(() => {})
      .finally(() => { watching.delete(id); });
  }
}

async function loadJobs() {
  const res = await rpc("JobService", "ListJobs", { pageSize: 50, consistent: true });
  for (const j of res.jobs || []) {
    const cur = jobs.get(j.id);
    if (!cur || !watching.has(j.id)) jobs.set(j.id, j);
    else if (final(j.state)) jobs.set(j.id, j);
  }
  renderJobs();
  watchActive();
}

async function loadUsage() {
  const u = await rpc("JobService", "GetUsage", {});
  $("who").textContent = `${u.tenant} (${u.tier})`;
  const rows = (u.rules || []).map((r) => {
    const used = Number(r.used || 0), limit = Number(r.limit || 0), left = Number(r.remaining || 0);
    const reset = r.resetsAt ? `resets in ${until(r.resetsAt)}` : "frees as jobs finish";
    return el("div", { class: "usage-row", "data-rule": r.rule },
      el("div", { class: "meta" }, el("span", {}, el("b", {}, r.rule), " ", r.description || ""), el("span", {}, `${left}/${limit} left · ${reset}`)),
      bar(used, limit));
  });
  $("usage").replaceChildren(...(rows.length ? rows : [el("p", { class: "muted" }, "No limits apply to you.")]));
  const sel = $("submit-model");
  if (!sel.options.length) {
    for (const m of u.models || []) sel.append(el("option", { value: m }, m));
  }
}

function explain(err) {
  const parts = [el("b", {}, "Refused: "), err.message];
  if (err.retryAfter) parts.push(el("div", {}, `Retry in ${err.retryAfter} s (at ${new Date(Date.now() + 1000 * Number(err.retryAfter)).toLocaleTimeString()}).`));
  const code = { resource_exhausted: "Over a limit or the system is busy (HTTP 429).", invalid_argument: "The request is not valid.", failed_precondition: "It cannot run here.", unauthenticated: "The key is not valid." }[err.code];
  if (code) parts.push(el("div", { class: "muted" }, code));
  return el("div", { class: "refusal", "data-code": err.code }, parts);
}

// ---- challenges ----

// leadingZeros counts the leading zero bits of a digest.
function leadingZeros(digest) {
  const b = new Uint8Array(digest);
  let z = 0;
  for (const x of b) {
    if (x === 0) { z += 8; continue; }
    return z + Math.clz32(x) - 24;
  }
  return z;
}

// solveChallenge finds a nonce such that SHA-256(token ‖ nonce as 8 bytes
// big-endian) has at least difficulty leading zero bits, with Web Crypto,
// a batch of digests at a time (each digest is a promise).
async function solveChallenge(token, difficulty) {
  if (!window.crypto || !crypto.subtle) throw new Error("this browser gives Web Crypto only to secure pages (https, or localhost): open the dashboard over https to answer challenges");
  const tok = new TextEncoder().encode(token);
  const batch = 512;
  for (let base = 0; base < 2 ** 40; base += batch) {
    const tries = [];
    for (let i = 0; i < batch; i++) {
      const buf = new Uint8Array(tok.length + 8);
      buf.set(tok);
      new DataView(buf.buffer).setBigUint64(tok.length, BigInt(base + i));
      tries.push(crypto.subtle.digest("SHA-256", buf));
    }
    const digests = await Promise.all(tries);
    for (let i = 0; i < batch; i++) {
      if (leadingZeros(digests[i]) >= difficulty) return String(base + i);
    }
  }
  throw new Error("no nonce found");
}

// Passes are kept for the session, per key: a person answers once.
function passes() {
  const now = Date.now();
  return JSON.parse(store.getItem("sluice.passes") || "[]").filter((p) => Date.parse(p.expiresAt) > now && p.key === key());
}

function keepPass(p) {
  const all = passes().filter((q) => q.rule !== p.rule);
  all.push({ rule: p.rule, token: p.token, expiresAt: p.expiresAt, key: key() });
  store.setItem("sluice.passes", JSON.stringify(all));
}

// submitAnswering submits req; refused with a proof-of-work challenge, it
// solves it in the browser, says so in out, and submits again.
async function submitAnswering(req, out) {
  req.challengePasses = passes().map((p) => p.token);
  try {
    return await rpc("JobService", "Submit", req);
  } catch (err) {
    const ch = err.challenge;
    if (!ch) throw err;
    if (ch.kind !== "proof-of-work") {
      throw new RPCError(err.code, err.message + ` Rule "${ch.rule}" asks for a CAPTCHA, which this page does not show.`, err.retryAfter);
    }
    out.replaceChildren(el("div", { class: "solving", "data-difficulty": ch.difficulty },
      `Over rule "${ch.rule}": solving a challenge (difficulty ${ch.difficulty}) to show this is a person…`));
    const started = performance.now();
    const nonce = await solveChallenge(ch.token, ch.difficulty);
    const res = await rpc("JobService", "Submit", { ...req, challengeAnswer: { challenge: ch.token, nonce } });
    if (res.challengePass) keepPass(res.challengePass);
    res.solved = { rule: ch.rule, seconds: ((performance.now() - started) / 1000).toFixed(1) };
    return res;
  }
}

async function submitJob(ev) {
  ev.preventDefault();
  const out = $("submit-result");
  let input;
  try { input = JSON.parse($("submit-input").value || "{}"); } catch (e) {
    out.replaceChildren(el("div", { class: "refusal" }, "Input is not JSON: " + e.message));
    return;
  }
  try {
    const res = await submitAnswering({ spec: { model: $("submit-model").value, input, priority: Number($("submit-priority").value || 0) } }, out);
    const j = res.job;
    jobs.set(j.id, j);
    out.replaceChildren(el("div", { class: "accepted", "data-job": j.id }, `Job ${j.id} queued`,
      stateName(j.state) === "QUEUED" ? `: number ${j.queuePosition} in line, ` +
        (j.waitingReason ? `waiting: ${j.waitingReason}.` : j.etaUnknown ? "its ETA unknown here." : Number(j.etaSeconds) > 0 ? `about ${j.etaSeconds} s.` : "starting now.") : ".",
      res.solved ? el("div", { class: "muted solved" }, `Challenge of rule "${res.solved.rule}" solved in ${res.solved.seconds} s` +
        (res.challengePass ? `; no more until ${new Date(res.challengePass.expiresAt).toLocaleTimeString()}.` : ".")) : null));
    renderJobs();
    watchActive();
  } catch (err) {
    out.replaceChildren(explain(err));
  }
  loadUsage().catch(() => {});
}

async function cancelJob(id) {
  try {
    const res = await rpc("JobService", "CancelJob", { id });
    jobs.set(id, res.job);
    renderJobs();
  } catch (err) {
    $("submit-result").replaceChildren(explain(err));
  }
}

// ---- operator view ----

const history = []; // {t, byTenant: {tenant: n}}
const palette = ["#2f6fed", "#12a150", "#d97706", "#9333ea", "#d92d20", "#0891b2", "#65a30d", "#db2777"];
let tierOf = {};

function table(head, rows) {
  return el("table", {}, el("thead", {}, el("tr", {}, head.map((h) => el("th", {}, h)))), el("tbody", {}, rows));
}

function chart(series, width, height) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("width", "100%");
  const names = [...new Set(history.flatMap((h) => Object.keys(h.byTenant)))].sort();
  const max = Math.max(1, ...history.map((h) => Object.values(h.byTenant).reduce((a, b) => a + b, 0)));
  // The last five minutes, or since the page started watching.
  const span = Math.min(300000, Math.max(20000, Date.now() - (history.length ? history[0].t : Date.now()) + 2000));
  const t0 = Date.now() - span;
  const x = (t) => 40 + ((t - t0) / span) * (width - 50);
  const y = (v) => height - 20 - (v / max) * (height - 30);
  const add = (tag, attrs) => { const e = document.createElementNS(ns, tag); for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v); svg.append(e); return e; };
  add("line", { x1: 40, y1: y(0), x2: width - 10, y2: y(0), stroke: "#e4e7ec" });
  add("text", { x: 4, y: y(max) + 4 }).textContent = String(max);
  add("text", { x: 4, y: y(0) + 4 }).textContent = "0";
  add("text", { x: 40, y: height - 4 }).textContent = `${Math.round(span / 1000)} s ago`;
  add("text", { x: width - 40, y: height - 4 }).textContent = "now";
  // Stacked: each tenant's band sits on the ones before it.
  names.forEach((name, i) => {
    const pts = history.map((h) => {
      let below = 0;
      for (const n of names.slice(0, i)) below += h.byTenant[n] || 0;
      return [x(h.t), y(below + (h.byTenant[name] || 0)), y(below)];
    });
    if (!pts.length) return;
    const top = pts.map((p) => `${p[0].toFixed(1)},${p[1].toFixed(1)}`);
    const bottom = pts.slice().reverse().map((p) => `${p[0].toFixed(1)},${p[2].toFixed(1)}`);
    add("polygon", { points: top.concat(bottom).join(" "), fill: palette[i % palette.length], "fill-opacity": "0.55", stroke: palette[i % palette.length] });
  });
  const legend = el("div", { class: "legend" }, names.map((n, i) => el("span", {}, el("i", { style: `background:${palette[i % palette.length]}` }), `${n} (${tierOf[n] || "?"})`)));
  return el("div", {}, svg, legend);
}

async function loadOperator() {
  const [st, q] = await Promise.all([rpc("AdminService", "GetClusterStatus", {}), rpc("AdminService", "ListQueue", { pageSize: 1000, consistent: true })]);
  $("who").textContent = `operator · node ${st.nodeId}`;
  const leader = st.leaderId || "none";
  $("cluster").replaceChildren(
    el("p", {}, `Leader `, el("b", { "data-leader": leader }, leader), ` · term ${st.term} · applied ${st.appliedIndex}`),
    el("p", {}, el("b", { id: "queued-total" }, String(q.total || 0)), " queued · ", el("b", {}, String(st.runningJobs || 0)), " running · ", String(st.finishedJobs || 0), " finished"),
    table(["Member", "Role", "Address", "Applied"], (st.members || []).map((m) =>
      el("tr", {}, el("td", {}, m.id), el("td", {}, m.role + (m.unreachable ? " (unreachable)" : "")), el("td", {}, m.httpAddress || "-"), el("td", {}, m.appliedIndex || "-")))));
  const byTenant = {}, byTier = {};
  for (const j of q.jobs || []) {
    byTenant[j.tenant] = (byTenant[j.tenant] || 0) + 1;
    const tier = tierOf[j.tenant] || "?";
    byTier[tier] = (byTier[tier] || 0) + 1;
  }
  history.push({ t: Date.now(), byTenant });
  while (history.length && history[0].t < Date.now() - 300000) history.shift();
  const tierMax = Math.max(1, ...Object.values(byTier));
  $("tiers").replaceChildren(...(Object.keys(byTier).length ? Object.keys(byTier).sort().map((t) =>
    el("div", { class: "usage-row", "data-tier": t }, el("div", { class: "meta" }, el("b", {}, t), el("span", {}, `${byTier[t]} queued`)), bar(byTier[t], tierMax, true)))
    : [el("p", { class: "muted" }, "Nothing queued.")]));
  $("queue-chart").replaceChildren(chart(history, 900, 180));
  $("executors").replaceChildren(table(["Executor", "Slots", "GPUs", "Memory free", "Util", "Warm models"], (st.executors || []).map((e) => {
    const gpus = e.gpus || [];
    const free = gpus.reduce((a, g) => a + Number(g.memoryFreeMb || 0), 0), total = gpus.reduce((a, g) => a + Number(g.memoryTotalMb || 0), 0);
    const known = gpus.filter((g) => (g.utilizationPct || 0) >= 0); // synthetic GPUs report -1
    const util = known.length ? Math.round(known.reduce((a, g) => a + (g.utilizationPct || 0), 0) / known.length) + "%" : "-";
    return el("tr", {}, el("td", {}, e.name), el("td", {}, `${e.busySlots || 0}/${e.slots}`), el("td", {}, gpus.map((g) => g.name).join(", ") || "-"),
      el("td", {}, total ? `${Math.round(free / 1024)}/${Math.round(total / 1024)} GiB` : "-"), el("td", {}, util), el("td", {}, (e.warmModels || []).join(", ") || "-"));
  })));
  const rej = st.rejections || [];
  const rejMax = Math.max(1, ...rej.map((r) => Number(r.count)));
  $("rejections").replaceChildren(...(rej.length ? rej.map((r) => el("div", { class: "usage-row", "data-rule": r.rule },
    el("div", { class: "meta" }, el("b", {}, r.rule), el("span", {}, `${r.count} · last ${clock(r.lastAt)} (${r.lastTenant})`)), bar(Number(r.count), rejMax, true)))
    : [el("p", { class: "muted" }, "No rejections since this node started leading.")]));
  $("running").replaceChildren(table(["Job", "Tenant", "Model", "Executor", "Since"], (st.running || []).map((j) =>
    el("tr", {}, el("td", {}, j.id), el("td", {}, j.tenant), el("td", {}, j.spec ? j.spec.model : ""), el("td", {}, j.executor || "-"), el("td", {}, clock(j.startedAt))))));
  const dead = st.deadLetters || [];
  $("dead").replaceChildren(dead.length ? table(["Job", "Tenant", "Model", "Error", ""], dead.map((j) =>
    el("tr", {}, el("td", {}, j.id), el("td", {}, j.tenant), el("td", {}, j.spec ? j.spec.model : ""), el("td", {}, j.error ? `${j.error.code}: ${j.error.message}` : ""),
      el("td", {}, el("button", { class: "small", type: "button", onclick: () => redrive([j.id]) }, "Redrive")))))
    : el("p", { class: "muted" }, "No dead letters."));
}

async function redrive(ids) {
  try { await rpc("AdminService", "RedriveDeadLetters", { jobIds: ids }); } catch (err) { alert(err.message); }
  loadOperator().catch(() => {});
}

// ---- session ----

let timer = null;

function show(role) {
  $("login").hidden = !!role;
  $("user").hidden = role !== "user";
  $("operator").hidden = role !== "operator";
  $("nav").hidden = !role;
}

async function start(role) {
  show(role);
  clearInterval(timer);
  if (role === "user") {
    await Promise.all([loadUsage(), loadJobs()]);
    timer = setInterval(() => { loadJobs().catch(() => {}); loadUsage().catch(() => {}); }, 2000);
  } else {
    const p = await rpc("AdminService", "GetPolicy", {});
    tierOf = Object.fromEntries(((p.policy && p.policy.tenants) || []).map((t) => [t.name, t.tier]));
    await loadOperator();
    timer = setInterval(() => loadOperator().catch(() => {}), 2000);
  }
}

function logout() {
  store.clear();
  clearInterval(timer);
  for (const ac of watching.values()) ac.abort();
  watching.clear();
  jobs.clear();
  history.length = 0;
  show(null);
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const role = document.querySelector("input[name=role]:checked").value;
    store.setItem("sluice.key", $("login-key").value);
    store.setItem("sluice.role", role);
    $("login-key").value = "";
    try {
      await start(role);
      $("login-error").textContent = "";
    } catch (err) {
      logout();
      $("login-error").textContent = `${err.code}: ${err.message}`;
    }
  });
  $("logout").addEventListener("click", logout);
  $("submit-form").addEventListener("submit", submitJob);
  const role = store.getItem("sluice.role");
  if (key() && role) start(role).catch(() => logout());
  else show(null);
});
