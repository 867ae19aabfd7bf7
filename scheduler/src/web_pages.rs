//! The web UI's pages: HTML shells with a little plain script (no
//! framework, nothing fetched from elsewhere) that reads the JSON API of
//! `web_ui.rs` and draws tables, the stage graph and the task timeline as
//! SVG; a running job's page redraws every second until the job ends.

/// Styles and helpers every page shares.
const HEAD: &str = r##"<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #1d2430; background: #f6f7f9; }
header { background: #1d2430; color: #fff; padding: 10px 20px; display: flex; gap: 20px; align-items: baseline; }
header a { color: #cfe3ff; text-decoration: none; }
header strong { font-size: 18px; margin-right: 20px; }
main { padding: 16px 20px; }
table { border-collapse: collapse; background: #fff; width: 100%; margin: 8px 0 20px; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid #e3e6ea; white-space: nowrap; }
th { background: #eef1f5; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.state-running, .state-queued { color: #0b63c5; } .state-succeeded { color: #1a7f37; }
.state-failed { color: #c62828; } .state-cancelled { color: #8a6d00; }
.error { color: #c62828; white-space: pre-wrap; }
pre { background: #fff; border: 1px solid #e3e6ea; padding: 8px; overflow-x: auto; font-size: 12px; }
svg { background: #fff; border: 1px solid #e3e6ea; }
.muted { color: #6b7480; }
dl { display: grid; grid-template-columns: max-content auto; gap: 2px 16px; margin: 0 0 16px; }
dt { color: #6b7480; }
</style>
<script>
function esc(s) { return String(s ?? "").replace(/[&<>"']/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;","'":"&#39;"}[c])); }
function bytes(n) { const u = ["B","KiB","MiB","GiB","TiB"]; let i = 0; n = Number(n || 0); while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; } return (i ? n.toFixed(1) : n) + " " + u[i]; }
function secs(ms) { return (Number(ms || 0) / 1000).toFixed(ms < 10000 ? 3 : 1) + " s"; }
function recovery(r) { if (!r) return ""; const parts = []; if (r.tasks_retried) parts.push(r.tasks_retried + " retried"); if (r.map_tasks_rerun) parts.push(r.map_tasks_rerun + " map tasks re-run"); if (r.executors_lost) parts.push(r.executors_lost + " executors lost"); if (r.scheduler_restarts) parts.push(r.scheduler_restarts + " scheduler restarts"); if (r.outputs_recovered) parts.push(r.outputs_recovered + " outputs recovered"); return parts.join(", "); }
async function getJson(path) { const r = await fetch(path, {credentials: "same-origin"}); if (r.status === 401) { location.href = "/login"; throw new Error("login"); } if (!r.ok) throw new Error(await r.text()); return r.json(); }
</script>"##;

fn shell(title: &str, body: &str, script: &str) -> String {
    format!(
        "<!doctype html><html><head><title>{title} · Volley</title>{HEAD}</head><body>\
         <header><strong>Volley</strong><a href=\"/\">Jobs</a><a href=\"/executors\">Executors</a>\
         <a href=\"/metrics\">Metrics</a></header><main>{body}</main><script>{script}</script></body></html>"
    )
}

/// The jobs list, filtered by state.
pub(crate) fn jobs() -> String {
    shell(
        "Jobs",
        r##"<h2>Jobs</h2>
<label>State <select id="state-filter">
<option value="">all</option><option>running</option><option>succeeded</option><option>failed</option><option>cancelled</option>
</select></label>
<label><input type="checkbox" id="history-filter"> also jobs only the event log holds</label>
<table id="jobs"><thead><tr><th>Job</th><th>Name</th><th>User</th><th>State</th><th class="num">Elapsed</th><th class="num">Stages</th><th class="num">Tasks</th><th class="num">Rows out</th><th class="num">Shuffled</th><th>Recovery</th></tr></thead><tbody></tbody></table>"##,
        r##"
const filter = document.getElementById("state-filter");
const everything = document.getElementById("history-filter");
const params = new URLSearchParams(location.search);
filter.value = params.get("state") || "";
everything.checked = params.get("all") === "true";
function query() {
  const q = new URLSearchParams();
  if (filter.value) q.set("state", filter.value);
  if (everything.checked) q.set("all", "true");
  const text = q.toString();
  return text ? "?" + text : "";
}
filter.onchange = everything.onchange = () => { history.replaceState(null, "", query() || "/"); draw(); };
async function draw() {
  const jobs = await getJson("/api/jobs" + query());
  document.querySelector("#jobs tbody").innerHTML = jobs.map(j => `<tr class="job-row" data-job="${esc(j.job_id)}">
    <td><a href="/jobs/${esc(j.job_id)}">${esc(j.job_id)}</a></td><td>${esc(j.name)}</td><td>${esc(j.user || "")}</td>
    <td class="state-${esc(j.state)}">${esc(j.state)}</td><td class="num">${secs(j.elapsed_ms)}</td>
    <td class="num">${j.stages.done}/${j.stages.total}</td><td class="num">${j.tasks.done}/${j.tasks.total}</td>
    <td class="num">${j.rows_out}</td><td class="num">${bytes(j.bytes_shuffled)}</td><td>${esc(recovery(j.recovery))}</td></tr>`).join("");
  document.body.dataset.loaded = "true";
}
draw(); setInterval(draw, 2000);
"##,
    )
}

/// One job: status, stage graph, stages, task timeline; live while it runs.
pub(crate) fn job(id: &str) -> String {
    // The id is only ever read by the script, as a JSON string.
    let id_json = serde_json::to_string(id)
        .unwrap_or_else(|_| "\"\"".into())
        .replace('<', "\\u003c");
    let script = format!(
        "const JOB_ID = {id_json};\n{}",
        r##"
const colors = ["#4e79a7","#f28e2b","#59a14f","#e15759","#76b7b2","#edc948","#b07aa1","#ff9da7","#9c755f","#bab0ac"];
function stageColor(id) { return colors[id % colors.length]; }
function depthOf(stages) {
  const byId = new Map(stages.map(s => [s.id, s])); const depth = new Map();
  const visit = s => { if (depth.has(s.id)) return depth.get(s.id); depth.set(s.id, 0);
    const d = s.inputs.length ? 1 + Math.max(...s.inputs.map(i => byId.has(i.stage) ? visit(byId.get(i.stage)) : 0)) : 0;
    depth.set(s.id, d); return d; };
  stages.forEach(visit); return depth;
}
function drawDag(stages) {
  const depth = depthOf(stages); const columns = new Map(); const pos = new Map();
  stages.forEach(s => { const d = depth.get(s.id); const row = (columns.get(d) || 0); columns.set(d, row + 1); pos.set(s.id, {x: 20 + d * 240, y: 20 + row * 84}); });
  const width = 40 + (Math.max(0, ...depth.values()) + 1) * 240, height = 30 + Math.max(1, ...columns.values()) * 84;
  let edges = "", nodes = "";
  stages.forEach(s => s.inputs.forEach(i => { const a = pos.get(i.stage), b = pos.get(s.id); if (!a || !b) return;
    const x1 = a.x + 190, y1 = a.y + 30, x2 = b.x, y2 = b.y + 30, mx = (x1 + x2) / 2;
    edges += `<path class="stage-edge" d="M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}" fill="none" stroke="#8a94a3" marker-end="url(#arrow)"/>
      <text x="${mx}" y="${(y1 + y2) / 2 - 4}" font-size="11" text-anchor="middle" fill="#55606e">${esc(i.exchange)}</text>`; }));
  stages.forEach(s => { const p = pos.get(s.id); const done = s.tasks_done === s.partitions; const fill = done ? "#e6f4ea" : (s.tasks_running ? "#e3efff" : "#f3f4f6");
    nodes += `<g class="stage-node" data-stage="${s.id}"><rect x="${p.x}" y="${p.y}" width="190" height="60" rx="6" fill="${fill}" stroke="${stageColor(s.id)}" stroke-width="2"/>
      <text x="${p.x + 10}" y="${p.y + 22}" font-weight="600">Stage ${s.id}${s.final ? " (final)" : ""}</text>
      <text x="${p.x + 10}" y="${p.y + 42}" font-size="12">${s.tasks_done}/${s.partitions} tasks · ${bytes(s.bytes_out)}</text></g>`; });
  document.getElementById("dag").innerHTML = `<svg width="${width}" height="${height}"><defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" markerHeight="6" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#8a94a3"/></marker></defs>${edges}${nodes}</svg>`;
}
function drawTimeline(job) {
  const runs = job.task_runs; const executors = [...new Set(runs.map(r => r.executor))].sort();
  const end = Math.max(job.now_ms, 1, ...runs.map(r => r.end_ms ?? job.now_ms));
  const left = 150, width = 900, laneHeight = 14; let y = 24, rects = "", labels = "";
  executors.forEach(e => { const lanes = []; const mine = runs.filter(r => r.executor === e).sort((a, b) => a.start_ms - b.start_ms);
    const top = y; mine.forEach(r => { const stop = r.end_ms ?? job.now_ms; let lane = lanes.findIndex(t => t <= r.start_ms); if (lane < 0) { lane = lanes.length; lanes.push(0); } lanes[lane] = stop;
      const x = left + r.start_ms / end * width, w = Math.max(2, (stop - r.start_ms) / end * width);
      const stroke = r.outcome === "failed" ? ' stroke="#c62828" stroke-width="2"' : (r.outcome === "superseded" ? ' stroke="#555" stroke-dasharray="3,2"' : "");
      rects += `<rect class="task" data-stage="${r.stage}" data-partition="${r.partition}" data-attempt="${r.attempt}" data-outcome="${r.outcome}" x="${x.toFixed(1)}" y="${top + lane * laneHeight}" width="${w.toFixed(1)}" height="${laneHeight - 2}" fill="${stageColor(r.stage)}" fill-opacity="${r.outcome === "running" ? 0.5 : 0.9}"${stroke}><title>stage ${r.stage} task ${r.partition} attempt ${r.attempt} on ${esc(e)}: ${r.outcome}, ${secs(stop - r.start_ms)}</title></rect>`; });
    const h = Math.max(1, lanes.length) * laneHeight; labels += `<text class="executor-lane" x="6" y="${top + h / 2 + 4}" font-size="12">${esc(e)}</text><line x1="0" x2="${left + width + 10}" y1="${top + h + 3}" y2="${top + h + 3}" stroke="#eef1f5"/>`; y = top + h + 8; });
  const ticks = [0, 0.25, 0.5, 0.75, 1].map(f => `<text x="${left + f * width}" y="14" font-size="11" text-anchor="middle" fill="#6b7480">${secs(f * end)}</text>`).join("");
  document.getElementById("timeline").innerHTML = `<svg width="${left + width + 20}" height="${y + 6}">${ticks}${labels}${rects}</svg>`;
}
// What a stage read from its inputs so far: every row of a stage it reads
// once (hash, gather, pass-through, repartition), and a broadcast input
// once per task.
function readOf(stages, s) {
  let rows = 0, bytes = 0;
  s.inputs.forEach(i => { const from = stages.find(t => t.id === i.stage); if (!from) return;
    const times = i.exchange === "broadcast" ? s.partitions : 1; rows += from.rows_out * times; bytes += from.bytes_out * times; });
  return {rows, bytes};
}
async function draw() {
  let job; try { job = await getJson("/api/jobs/" + encodeURIComponent(JOB_ID)); } catch (e) { document.getElementById("summary").innerHTML = `<p class="error">${esc(e.message)}</p>`; return; }
  document.getElementById("title").textContent = "Job " + job.job_id + (job.name ? " · " + job.name : "");
  document.getElementById("summary").innerHTML = `<dl>
    <dt>State</dt><dd id="job-state" class="state-${esc(job.state)}">${esc(job.state)}</dd><dt>User</dt><dd>${esc(job.user || "—")}</dd>
    <dt>Elapsed</dt><dd>${secs(job.elapsed_ms)}</dd><dt>Stages</dt><dd>${job.stages.done}/${job.stages.total}</dd>
    <dt>Tasks</dt><dd>${job.tasks.done}/${job.tasks.total} (${job.tasks.running} running)</dd><dt>Rows out</dt><dd>${job.rows_out}</dd>
    <dt>Shuffled</dt><dd>${bytes(job.bytes_shuffled)}</dd><dt>Recovery</dt><dd>${esc(recovery(job.recovery) || "none")}</dd>
    ${job.error ? `<dt>Error</dt><dd class="error">[${esc(job.error.kind)}] ${esc(job.error.message)}</dd>` : ""}</dl>`;
  const source = document.getElementById("source");
  if (job.source && !source.dataset.shown) { source.dataset.shown = "true"; source.innerHTML = `<details open><summary>${esc(job.source_kind)}</summary><pre id="source-text">${esc(job.source)}</pre></details>`; }
  drawDag(job.stage_list); drawTimeline(job);
  if (job.from_history) document.getElementById("timeline").innerHTML = "<p>This job was read back from the scheduler's history: its task timeline is not kept.</p>";
  document.querySelector("#stages tbody").innerHTML = job.stage_list.map(s => `<tr class="stage-row" data-stage="${s.id}">
    <td>${s.id}${s.final ? " (final)" : ""}${s.released ? " (outputs released)" : ""}</td><td class="num">${s.tasks_done}/${s.partitions}</td>
    <td>${s.inputs.map(i => "stage " + i.stage + " (" + esc(i.exchange) + ")").join(", ") || "—"}</td><td>${esc(s.output)}</td>
    <td class="num">${readOf(job.stage_list, s).rows}</td><td class="num">${bytes(readOf(job.stage_list, s).bytes)}</td>
    <td class="num">${s.rows_out}</td><td class="num">${bytes(s.bytes_out)}</td><td class="num">${secs(s.median_task_ms)} / ${secs(s.longest_task_ms)}</td><td class="num">${s.attempt}</td></tr>
    ${s.plan ? `<tr><td colspan="10"><details><summary>plan of stage ${s.id}, with each operator's metrics summed over its tasks</summary><pre>${esc(s.plan)}</pre></details></td></tr>` : ""}`).join("");
  document.body.dataset.state = job.state; document.body.dataset.loaded = "true";
  if (job.state === "running" || job.state === "queued") setTimeout(draw, 1000);
}
draw();
"##
    );
    shell(
        "Job",
        r##"<h2 id="title">Job</h2><div id="summary"></div><div id="source"></div>
<h3>Stages</h3><div id="dag"></div>
<table id="stages"><thead><tr><th>Stage</th><th class="num">Tasks</th><th>Reads</th><th>Output</th><th class="num">Rows in</th><th class="num">Bytes in</th><th class="num">Rows out</th><th class="num">Bytes out</th><th class="num">Task median / longest</th><th class="num">Attempt</th></tr></thead><tbody></tbody></table>
<h3>Tasks by executor</h3><p class="muted">Each bar is one task attempt, coloured by stage; red outline: failed, dashed: superseded.</p><div id="timeline"></div>"##,
        &script,
    )
}

/// The executors and their load.
pub(crate) fn executors() -> String {
    shell(
        "Executors",
        r##"<h2>Executors</h2>
<table id="executors"><thead><tr><th>Executor</th><th>Address</th><th>State</th><th class="num">Slots</th><th class="num">Running</th><th class="num">Memory pool</th><th class="num">Stored outputs</th><th class="num">Shuffle in memory</th><th class="num">Shuffle on disk</th><th class="num">Spilled</th></tr></thead><tbody></tbody></table>"##,
        r##"
async function draw() {
  const executors = await getJson("/api/executors");
  document.querySelector("#executors tbody").innerHTML = executors.map(e => `<tr class="executor-row"><td>${esc(e.executor_id)}</td><td>${esc(e.endpoint)}</td>
    <td>${esc(e.state)}</td><td class="num">${e.slots}</td><td class="num">${e.running_tasks}</td>
    <td class="num">${bytes(e.memory_reserved)} / ${bytes(e.memory_limit)}</td><td class="num">${e.stored_outputs}</td>
    <td class="num">${bytes(e.shuffle_memory_bytes)}</td><td class="num">${bytes(e.shuffle_disk_bytes)}</td><td class="num">${bytes(e.shuffle_spilled_bytes)}</td></tr>`).join("");
  document.body.dataset.loaded = "true";
}
draw(); setInterval(draw, 2000);
"##,
    )
}

/// The login form: the token goes into an `HttpOnly` cookie.
pub(crate) fn login(message: Option<&str>) -> String {
    let message = message
        .map(|m| format!("<p class=\"error\">{m}</p>"))
        .unwrap_or_default();
    format!(
        "<!doctype html><html><head><title>Log in · Volley</title>{HEAD}</head><body>\
         <header><strong>Volley</strong></header><main><h2>Log in</h2>{message}\
         <form method=\"post\" action=\"/login\"><label>Token <input id=\"token\" name=\"token\" type=\"password\" \
         autocomplete=\"current-password\" size=\"50\"></label> <button id=\"login\" type=\"submit\">Log in</button></form>\
         <p class=\"muted\">The token of a user of this cluster (<code>volley users add</code>).</p></main></body></html>"
    )
}
