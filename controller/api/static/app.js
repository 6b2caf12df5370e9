/* sdlab dashboard pages: fetches the JSON API, follows the live stream, draws the charts.
   Every value from the store is inserted as text (textContent), never as HTML. */
"use strict";
const sdlab = (() => {
  const csrfMeta = document.querySelector('meta[name="csrf-token"]');
  const csrf = csrfMeta ? csrfMeta.content : "";

  async function api(method, url, body) {
    const opts = { method, credentials: "same-origin", headers: { "X-CSRF-Token": csrf } };
    if (body instanceof FormData) {
      opts.body = body;
    } else if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    const res = await fetch(url, opts);
    if (res.status === 401) { window.location = "/login?next=" + window.location.pathname; }
    let data = null;
    try { data = await res.json(); } catch (e) { data = null; }
    return { ok: res.ok, status: res.status, data };
  }

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  function row(cells) {
    const tr = document.createElement("tr");
    for (const c of cells) {
      const td = document.createElement("td");
      if (c instanceof Node) td.appendChild(c); else td.textContent = c === null ? "" : String(c);
      tr.appendChild(td);
    }
    return tr;
  }

  function fmt(v) {
    if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toPrecision(4);
    return v === null || v === undefined ? "" : String(v);
  }
  function fmtParams(p) { return Object.entries(p).map(([k, v]) => k + "=" + fmt(v)).join(", "); }
  function when(t) { return t ? new Date(t).toLocaleTimeString() : ""; }

  function debounce(fn, ms) {
    let timer = null;
    return () => { clearTimeout(timer); timer = setTimeout(fn, ms); };
  }

  /* ------------------------------------------------------------------ campaign list */
  async function index() {
    const res = await api("GET", "/api/campaigns");
    const tbody = document.querySelector("#campaigns tbody");
    tbody.textContent = "";
    for (const c of res.data || []) {
      const a = el("a", c.name); a.href = "/campaigns/" + c.id;
      tbody.appendChild(row([a, el("span", c.status, "status " + c.status), c.planner,
        c.completed + " / " + c.budget, c.counts.FAILED || 0, when(c.created_at)]));
    }
    const form = document.getElementById("upload-form");
    if (form) {
      form.addEventListener("submit", async (ev) => {
        ev.preventDefault();
        const out = document.getElementById("upload-result");
        const r = await api("POST", "/api/campaigns", new FormData(form));
        if (r.ok) { out.textContent = "created " + r.data.name; index(); }
        else if (r.data && r.data.detail && r.data.detail.problems) {
          out.textContent = r.data.detail.problems.map((p) => p.key + ": " + p.message).join("\n");
        } else { out.textContent = "error " + r.status + ": " + JSON.stringify(r.data); }
      });
    }
  }

  /* ------------------------------------------------------------------ campaign page */
  async function campaign(id) {
    const state = { offset: 0, limit: 25, status: "", objectives: {}, names: [] };
    const base = "/api/campaigns/" + id;

    function setStatus(status, counts) {
      const s = document.getElementById("campaign-status");
      s.textContent = status; s.className = "status " + status;
      if (counts) {
        document.getElementById("campaign-counts").textContent = Object.entries(counts)
          .filter(([, n]) => n).map(([k, n]) => k + " " + n).join(", ") || "no experiments yet";
      }
    }

    async function loadDetail() {
      const r = await api("GET", base);
      if (!r.ok) return;
      const c = r.data;
      state.names = c.objectives.map((o) => o.name);
      setStatus(c.status, c.counts);
      const ctl = c.controller;
      document.getElementById("campaign-controller").textContent = !ctl
        ? "No controller holds this campaign."
        : (ctl.live ? "Run by the controller on " : "Its controller stopped renewing its lease (crashed?): it ran on ")
          + ctl.host + ", process " + ctl.pid + "; lease renewed " + ctl.renewed_at
          + (ctl.live ? "." : ". Start runs it again.");
      document.getElementById("decision").textContent =
        c.last_decision ? c.last_decision.summary : "No decision yet.";
      drawInstruments(c.instruments);
    }

    function drawInstruments(list) {
      const tbody = document.querySelector("#instruments tbody");
      tbody.textContent = "";
      for (const i of list) {
        const seen = i.last_seen_at ? when(i.last_seen_at) + (i.quiet ? " (quiet)" : "") : "never";
        const cell = el("span", seen, i.quiet ? "quiet" : "");
        let btn = el("span", "");
        if (document.getElementById("btn-pause")) {
          btn = el("button", i.in_service ? "Take out of service" : "Put back in service");
          btn.addEventListener("click", () => control(
            "/instruments/" + encodeURIComponent(i.name) + (i.in_service ? "/out" : "/in"),
            i.in_service ? { reason: "taken out from the dashboard" } : undefined));
        }
        tbody.appendChild(row([i.name, i.kind, el("span", i.state, "status " + i.state),
          i.in_service ? "yes" : "no", cell, i.consecutive_faults, i.reason || "", btn]));
      }
    }

    function experimentRow(e) {
      const box = el("input"); box.type = "checkbox"; box.value = e.id;
      box.disabled = e.status !== "PROPOSED";
      const link = el("a", e.id); link.href = "#"; link.addEventListener("click", async (ev) => {
        ev.preventDefault();
        const r = await api("GET", "/api/experiments/" + e.id);
        document.getElementById("experiment-detail").textContent = JSON.stringify(r.data, null, 2);
      });
      const objs = state.objectives[e.id] || {};
      const tr = row([box, link, el("span", e.status, "status " + e.status), fmtParams(e.parameters),
        fmtParams(objs), when(e.created_at), when(e.finished_at), e.waiting_for || "", e.reason || ""]);
      tr.dataset.id = e.id; tr.className = "experiment-row";
      return tr;
    }

    async function loadExperiments() {
      let url = base + "/experiments?offset=" + state.offset + "&limit=" + state.limit;
      if (state.status) url += "&status=" + state.status;
      const r = await api("GET", url);
      if (!r.ok) return;
      document.getElementById("exp-total").textContent = "(" + r.data.total + ")";
      const tbody = document.querySelector("#experiments tbody");
      tbody.textContent = "";
      for (const e of r.data.items) tbody.appendChild(experimentRow(e));
    }

    async function loadSamples() {
      const r = await api("GET", base + "/samples");
      if (!r.ok) return;
      document.getElementById("sample-total").textContent = "(" + r.data.length + ")";
      const tbody = document.querySelector("#samples tbody");
      tbody.textContent = "";
      for (const x of r.data.slice().reverse()) {
        tbody.appendChild(row([x.experiment_id, x.label, x.container || "", x.location,
          el("span", x.state, "status " + x.state), when(x.updated_at)]));
      }
    }

    function upsertExperiment(e) {
      if (state.offset !== 0 || (state.status && state.status !== e.status)) return;
      const tbody = document.querySelector("#experiments tbody");
      const old = tbody.querySelector('tr[data-id="' + e.id + '"]');
      const tr = experimentRow(e);
      if (old) { tbody.replaceChild(tr, old); } else {
        tbody.insertBefore(tr, tbody.firstChild);
        while (tbody.children.length > state.limit) tbody.removeChild(tbody.lastChild);
      }
    }

    async function loadCharts() {
      const r = await api("GET", base + "/charts");
      if (!r.ok) return;
      const d = r.data;
      for (const p of d.points) state.objectives[p.id] = p.objectives;
      if (typeof Plotly !== "undefined") drawCharts(d);
    }

    function drawCharts(d) {
      const layout = (extra) => Object.assign({ margin: { t: 20, r: 10, b: 40, l: 50 },
        height: 320, showlegend: true, legend: { orientation: "h" } }, extra);
      const cfg = { displaylogo: false, responsive: true };
      const best = [];
      for (const [name, s] of Object.entries(d.best_so_far)) {
        const x = s.experiment_ids.map((_, i) => i + 1);
        best.push({ x, y: s.values, mode: "markers", name: name, type: "scatter" });
        best.push({ x, y: s.best, mode: "lines", name: "best " + name + " (" + s.direction + ")",
          type: "scatter", line: { shape: "hv" } });
      }
      Plotly.react("chart-best", best, layout({ xaxis: { title: { text: "completed experiments" } } }), cfg);

      const done = d.points.filter((p) => p.status === "COMPLETED");
      const obj = d.objectives[0];
      const colour = done.map((p) => p.objectives[obj]);
      const ps = d.parameters;
      const numeric = (name) => done.every((p) => typeof p.parameters[name] === "number");
      let params;
      if (ps.length >= 3) {
        const dims = ps.map((name) => {
          if (numeric(name)) return { label: name, values: done.map((p) => p.parameters[name]) };
          const cats = [...new Set(done.map((p) => String(p.parameters[name])))];
          return { label: name, values: done.map((p) => cats.indexOf(String(p.parameters[name]))),
            tickvals: cats.map((_, i) => i), ticktext: cats };
        });
        dims.push({ label: obj, values: colour });
        params = [{ type: "parcoords", line: { color: colour, colorscale: "Viridis", showscale: true },
          dimensions: dims }];
      } else {
        const x = ps[0], y = ps.length > 1 ? ps[1] : null;
        params = [{ type: "scatter", mode: "markers", name: obj,
          x: done.map((p) => p.parameters[x]),
          y: y ? done.map((p) => p.parameters[y]) : colour,
          text: done.map((p) => "experiment " + p.id),
          marker: { color: colour, colorscale: "Viridis", showscale: true, size: 9 } }];
        const pending = d.points.filter((p) => p.status !== "COMPLETED");
        if (y && pending.length) {
          params.push({ type: "scatter", mode: "markers", name: "not completed",
            x: pending.map((p) => p.parameters[x]), y: pending.map((p) => p.parameters[y]),
            marker: { symbol: "x", color: "#999", size: 8 } });
        }
        params.layoutAxes = { xaxis: { title: { text: x } }, yaxis: { title: { text: y || obj } } };
      }
      Plotly.react("chart-params", params, layout(params.layoutAxes || {}), cfg);

      if (d.pareto) {
        document.getElementById("pareto-section").hidden = false;
        const [a, b] = d.pareto.objectives;
        const front = new Set(d.pareto.front);
        const onFront = d.pareto.points.filter((p) => front.has(p.id));
        Plotly.react("chart-pareto", [
          { type: "scatter", mode: "markers", name: "experiments",
            x: d.pareto.points.map((p) => p[a]), y: d.pareto.points.map((p) => p[b]),
            marker: { color: "#999" } },
          { type: "scatter", mode: "lines+markers", name: "Pareto front",
            x: onFront.map((p) => p[a]), y: onFront.map((p) => p[b]) },
        ], layout({ xaxis: { title: { text: a } }, yaxis: { title: { text: b } } }), cfg);
      }
      if (d.phase_map) {
        document.getElementById("phase-section").hidden = false;
        const labels = [...new Set(d.phase_map.points.map((p) => String(p.phase)))];
        Plotly.react("chart-phase", labels.map((lab) => {
          const pts = d.phase_map.points.filter((p) => String(p.phase) === lab);
          return { type: "scatter", mode: "markers", name: lab, x: pts.map((p) => p.x),
            y: pts.map((p) => p.y), marker: { size: 10 } };
        }), layout({ xaxis: { title: { text: d.phase_map.x } },
          yaxis: { title: { text: d.phase_map.y } } }), cfg);
      }
      const tl = d.timeline;
      const byStatus = {};
      for (const b of tl.bars) (byStatus[b.status] = byStatus[b.status] || []).push(b);
      const bars = Object.entries(byStatus).map(([status, bs]) => ({
        type: "bar", orientation: "h", name: status, y: bs.map((b) => b.instrument),
        base: bs.map((b) => b.start), x: bs.map((b) => Math.max(b.duration_s * 1000, 1)),
        text: bs.map((b) => "experiment " + b.experiment_id + ": " + b.action),
        hoverinfo: "text+y" }));
      Plotly.react("chart-timeline", bars, layout({ barmode: "overlay", xaxis: { type: "date" },
        height: 120 + 40 * Object.keys(tl.busy_fraction).length }), cfg);
      document.getElementById("busy").textContent = Object.entries(tl.busy_fraction)
        .map(([k, f]) => k + ": busy " + Math.round(f * 100) + "%, idle " +
          Math.round((1 - f) * 100) + "%").join("; ");
    }

    async function waitFor(cmd) {
      const out = document.getElementById("control-result");
      for (let i = 0; i < 60; i++) {
        const r = await api("GET", cmd.url);
        if (r.ok && r.data.status !== "PENDING") {
          out.textContent = r.data.command + ": " + r.data.status + (r.data.result ? " (" + r.data.result + ")" : "");
          loadDetail();
          return;
        }
        await new Promise((res) => setTimeout(res, 1000));
      }
    }

    async function control(path, body) {
      const out = document.getElementById("control-result");
      const r = await api("POST", base + path, body);
      if (r.status === 202 && r.data.command_id) {
        out.textContent = "command " + r.data.command_id + " queued, waiting for the controller";
        waitFor(r.data);
      } else if (r.ok) {
        out.textContent = JSON.stringify(r.data); loadDetail();
      } else {
        out.textContent = "refused (" + r.status + "): " + (r.data ? JSON.stringify(r.data.detail) : "");
      }
    }

    for (const b of document.querySelectorAll("#controls button")) {
      b.addEventListener("click", () => {
        if (b.dataset.action === "abort" && !window.confirm("Abort this campaign?")) return;
        control("/" + b.dataset.action);
      });
    }
    const selected = () => [...document.querySelectorAll("#experiments input:checked")]
      .map((x) => Number(x.value));
    const approve = document.getElementById("btn-approve");
    if (approve) {
      approve.addEventListener("click", () => control("/approve", { experiments: selected() }));
      document.getElementById("btn-reject").addEventListener("click",
        () => control("/reject", { experiments: selected(), reason: "rejected from the dashboard" }));
    }
    document.getElementById("exp-filter").addEventListener("change", (ev) => {
      state.status = ev.target.value; state.offset = 0; loadExperiments();
    });
    document.getElementById("exp-prev").addEventListener("click", () => {
      state.offset = Math.max(0, state.offset - state.limit); loadExperiments();
    });
    document.getElementById("exp-next").addEventListener("click", () => {
      state.offset += state.limit; loadExperiments();
    });

    // new results: redraw the charts, then the table's objectives column
    const chartsSoon = debounce(() => loadCharts().then(loadExperiments), 700);
    const detailSoon = debounce(loadDetail, 700);
    const samplesSoon = debounce(loadSamples, 700);
    const log = document.getElementById("log");
    const logState = { oldest: null, newest: 0 };
    function logLine(ev) {
      const line = el("div", when(ev.created_at) + "  " + ev.actor + "  " + ev.message);
      line.className = "log-line" + (ev.kind.startsWith("alarm.") ? " alarm" : "");
      line.dataset.id = ev.id;
      return line;
    }
    function addLog(ev) {  // a new entry from the stream: on top, once
      if (ev.id <= logState.newest) return;
      logState.newest = ev.id;
      log.insertBefore(logLine(ev), log.firstChild);
    }
    async function olderLog() {  // the next page, newest first, below what is shown
      let url = "/api/events?campaign_id=" + id + "&limit=100";
      if (logState.oldest !== null) url += "&before_id=" + logState.oldest;
      const r = await api("GET", url);
      if (!r.ok) return;
      for (const ev of r.data) {
        log.appendChild(logLine(ev));
        logState.newest = Math.max(logState.newest, ev.id);
        logState.oldest = logState.oldest === null ? ev.id : Math.min(logState.oldest, ev.id);
      }
      const more = document.getElementById("log-older");
      more.hidden = r.data.length < 100;
    }
    document.getElementById("log-older").addEventListener("click", olderLog);
    loadDetail();
    loadCharts().then(loadExperiments);  // the charts' data fills the objectives column
    loadSamples();
    await olderLog();  // the newest page first; the stream goes on after its newest entry
    const source = new EventSource(base + "/stream?after_id=" + logState.newest);
    source.addEventListener("experiment", (m) => { upsertExperiment(JSON.parse(m.data)); chartsSoon(); });
    source.addEventListener("step", () => { chartsSoon(); samplesSoon(); });
    source.addEventListener("instrument", () => detailSoon());
    source.addEventListener("campaign", (m) => { const c = JSON.parse(m.data); setStatus(c.status, c.counts); detailSoon(); });
    source.addEventListener("log", (m) => addLog(JSON.parse(m.data)));
    source.addEventListener("open", () => { document.body.dataset.live = "yes"; });
    source.addEventListener("closed", () => { source.close(); document.body.dataset.live = "closed"; });
  }

  return { index, campaign, api };
})();
