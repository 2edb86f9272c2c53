// A target's page (/p/<pid>, /r/<n>): threads with their stacks, a flame graph, PyTorch step
// times and modules, memory and variables, an SQL console and the settings. A live target is
// read again about once a second without reloading; a recording once. Every failure shows in
// the section it belongs to (or the banner when the target itself is gone), never as a blank.
import { get, post } from "./api.js";
import { legend, lines, paintLegend, stackedBars } from "./chart.js";
import { clear, errorBox, h } from "./dom.js";
import { FlameGraph } from "./flame.js";
import * as fmt from "./format.js";
import { resultTable } from "./table.js";

const REFRESH_MS = 1000;
const STEP_PARTS = [
  { key: "forward", label: "forward", colour: "#2563eb" },
  { key: "backward", label: "backward", colour: "#f97316" },
  { key: "optimizer", label: "optimizer", colour: "#16a34a" },
  { key: "rest", label: "the rest", colour: "#9ca3af" },
];

function section(id, title, ...body) {
  return h("section", { class: "card", id }, h("h2", {}, title, h("span", { class: "sub", id: id + "-sub" })), body);
}

function frameText(f) {
  return [h("span", { class: "func" }, f.func), " ",
    h("span", { class: "file" }, "(" + f.file + ":" + (f.lineno === null ? "?" : f.lineno) + ")")];
}

export function renderTarget(app, kind, key) {
  const base = `/api/${kind}/${key}`;
  let stopped = false;
  let paused = false;
  let timer = null;
  let overview = null;
  let ready = false;
  const flameWindow = h("select", { id: "flame-window", title: "how far back" },
    [["10", "last 10 s"], ["30", "last 30 s"], ["60", "last 60 s"], ["300", "last 5 min"], ["0", "everything recorded"]]
      .map(([v, t]) => h("option", { value: v }, t)));
  // A named target is most often a recording: it opens on everything it holds.
  flameWindow.value = kind === "r" ? "0" : "10";
  const flameThread = h("select", { id: "flame-thread" }, h("option", { value: "" }, "all threads"));
  const flameSearch = h("input", { type: "search", id: "flame-search", placeholder: "search (regular expression)" });
  const flameStatus = h("div", { id: "flame-status" });
  const flameBox = h("div", { class: "flame-wrap", id: "flame-box" });
  const flame = new FlameGraph(flameBox, flameStatus);
  const sqlInput = h("textarea", { id: "sql-input", spellcheck: "false" },
    "SELECT func, count(*) AS samples FROM python.stacks WHERE depth = 0 GROUP BY 1 ORDER BY 2 DESC LIMIT 20");
  const sqlRun = h("button", { id: "sql-run", class: "primary" }, "Run");
  const sqlStatus = h("span", { id: "sql-status" });
  const sqlResult = h("div", { id: "sql-result", class: "scroll" });
  const pauseButton = h("button", { id: "pause" }, "pause");
  const stepLegend = legend(STEP_PARTS);
  paintLegend(stepLegend);

  clear(app,
    h("div", { id: "overview" }, h("p", { class: "muted" }, "Loading…")),
    h("nav", { class: "sections" }, ["stacks", "flame", "torch", "memory", "sql", "settings"].map((id, i) =>
      h("a", { href: "#" + id }, ["Threads", "Flame graph", "PyTorch", "Memory", "SQL", "Settings"][i]))),
    section("stacks", "Threads", h("div", { id: "stacks-body" }, h("p", { class: "muted" }, "Loading…"))),
    section("flame", "Flame graph",
      h("div", { class: "controls" }, flameWindow, flameThread, flameSearch,
        h("button", { id: "flame-reset", onclick: () => flame.zoomTo(null) }, "reset zoom")),
      flameStatus, flameBox),
    section("torch", "PyTorch steps",
      h("div", { id: "torch-body" }, h("p", { class: "muted" }, "Loading…"))),
    section("memory", "Memory", h("div", { class: "two" },
      h("div", { id: "memory-body" }, h("p", { class: "muted" }, "Loading…")),
      h("div", { id: "variables-body" }))),
    section("sql", "SQL", h("p", { class: "muted" }, "One read-only statement over this target's tables (",
      h("code", {}, "python.stacks, python.torch_trace, python.memory, python.variables, system.process"), ", …)."),
    sqlInput, h("div", { class: "controls" }, sqlRun, sqlStatus), sqlResult),
    section("settings", "Settings", h("div", { id: "settings-body" }, h("p", { class: "muted" }, "Loading…"))));

  const $ = (id) => document.getElementById(id);

  // ---- overview ----
  function showOverview(o) {
    overview = o;
    const state = o.state;
    clear($("crumbs"), " › ", h("span", { id: "target-name" }, o.description),
      " ", h("span", { class: "badge " + state, id: "target-state" }, state));
    const facts = [
      ["pid", o.pid === null ? "–" : String(o.pid)],
      ["command", o.command || "–"],
      ["Python", o.python_version || "–"],
      ["host", o.host || "–"],
      ["rank", o.rank === null ? "–" : String(o.rank)],
      ["recorded", o.first_ts ? fmt.duration(o.last_ts - o.first_ts) + " up to " + fmt.time(o.last_ts) : "nothing yet"],
      ["samples", fmt.count(o.samples)],
      ["steps", fmt.count(o.steps)],
      ["segments", fmt.count(o.segments) + (o.segments_corrupt ? `, ${o.segments_corrupt} damaged` : "") + (o.segments_lost ? `, ${o.segments_lost} lost` : "")],
    ];
    if (o.info) facts.push(["recorder", "up " + fmt.duration(o.info.uptime) + (o.info.torch.tracing ? ", tracing PyTorch" : "")]);
    clear($("overview"), h("div", { class: "facts" }, facts.map(([k, v]) => h("span", {}, h("b", {}, k + " "), v))),
      o.info_error ? h("div", { class: "note", id: "info-error" }, o.info_error) : null,
      o.data_error ? h("div", { class: "note" }, o.data_error) : null);
    const banner = $("banner");
    if (o.state === "gone") {
      banner.textContent = `Process ${o.pid} is gone: what it recorded is shown as it was left.`;
      banner.hidden = false;
    } else if (o.state === "stopped") {
      banner.textContent = o.info_error;
      banner.hidden = false;
    } else {
      banner.hidden = true;
    }
    document.title = "probing: " + o.description;
  }

  // ---- threads ----
  function showStacks(st) {
    const body = $("stacks-body");
    const needle = flame.search ? flame.matcher() : null;
    const when = st.source === "backtrace" ? "asked at " : "latest samples, at ";
    clear($("stacks-sub"), st.threads.length + (st.threads.length === 1 ? " thread, " : " threads, ") + when + fmt.time(st.ts));
    clear(body,
      st.note ? h("div", { class: "note", id: "stacks-note" }, st.note) : null,
      st.threads.length === 0 ? h("p", { class: "muted" }, "No threads sampled.") : null,
      h("div", { class: "threads" }, st.threads.map((t) => h("div", {
        class: "thread" + (t.holds_gil ? " gil" : ""), dataset: { tid: t.thread_id },
      },
      h("div", {}, h("span", { class: "name" }, (t.thread_name || "thread") + " "), h("span", { class: "muted" }, String(t.thread_id)),
        t.holds_gil ? h("span", { class: "gilmark" }, "● holds the GIL") : null,
        t.truncated ? h("span", { class: "note" }, " (cut short)") : null,
        st.source === "samples" && t.ts && t.ts < st.ts - 0.5 ? h("span", { class: "muted" }, " sampled at " + fmt.time(t.ts)) : null),
      h("ol", {}, t.frames.length ? t.frames.map((f) => h("li", {
        class: "frame" + (needle && needle(f.func) ? " match" : ""), title: "search the flame graph for " + f.func,
        onclick: () => { flameSearch.value = f.func; flame.setSearch(f.func); $("flame").scrollIntoView(); },
      }, frameText(f))) : h("li", { class: "muted" }, "no Python frames"))))));
  }

  // ---- flame graph ----
  // Widths of the drawings, read once per refresh before anything on the page changes (each
  // read after a change would lay the page out again).
  let widths = {};
  function measure() {
    widths = { flame: flameBox.clientWidth, torch: $("torch-body").clientWidth, memory: $("memory-body").clientWidth };
  }

  function showFlame(f) {
    const chosen = flameThread.value;
    clear(flameThread, h("option", { value: "" }, "all threads"), f.threads.map((t) =>
      h("option", { value: String(t.thread_id) }, `${t.name || "thread"} (${t.thread_id}), ${fmt.count(t.samples)} samples`)));
    flameThread.value = chosen;
    if (flameThread.value !== chosen) flameThread.value = "";
    clear($("flame-sub"), fmt.count(f.samples) + " samples" + (f.from_ts ? ", " + fmt.duration(f.to_ts - f.from_ts) : ""));
    flame.update(f, widths.flame);
  }

  // ---- PyTorch ----
  function showSteps(st) {
    const body = $("torch-body");
    if (st.steps.length === 0) {
      clear(body, h("p", { class: "muted", id: "torch-empty" }, "No PyTorch steps traced yet (torch not imported, tracing off, or no step finished)."));
      return;
    }
    const chartBox = h("div", { id: "step-chart-box" });
    const last = st.steps[st.steps.length - 1];
    const median = [...st.steps.map((r) => r.wall)].sort((a, b) => a - b)[Math.floor(st.steps.length / 2)];
    clear($("torch-sub"), `${st.steps.length} of ${fmt.count(st.steps_recorded)} steps shown, latest ${last.step}, median ${fmt.ms(median)}`);
    clear(body, stepLegend, chartBox,
      h("h3", {}, "Modules by time per step"),
      h("div", { class: "scroll" }, h("table", { id: "modules" },
        h("thead", {}, h("tr", {}, h("th", {}, "module"), h("th", {}, "stage"), h("th", { class: "num" }, "per step"), h("th", { class: "num" }, "calls per step"))),
        h("tbody", {}, st.modules.slice(0, 60).map((m) => h("tr", {},
          h("td", { class: "mono" }, m.module), h("td", {}, m.stage),
          h("td", { class: "num" }, fmt.ms(m.per_step)), h("td", { class: "num" }, m.calls_per_step.toFixed(1))))))));
    const svg = stackedBars(chartBox, st.steps, STEP_PARTS, {
      id: "step-chart",
      width: widths.torch,
      x: (r) => r.step,
      yLabel: (v) => (v * 1e3).toFixed(v < 0.01 ? 1 : 0) + " ms",
      title: (r) => `step ${r.step}: ${fmt.ms(r.wall)} (forward ${fmt.ms(r.forward)}, backward ${fmt.ms(r.backward)}, optimizer ${fmt.ms(r.optimizer)}, the rest ${fmt.ms(r.rest)})`,
    });
    svg.dataset.lastStep = String(last.step);
    svg.dataset.steps = String(st.steps.length);
  }

  // ---- memory and variables ----
  function showMemory(m) {
    const body = $("memory-body");
    if (m.ts.length === 0) {
      clear(body, h("p", { class: "muted" }, "No memory samples yet (one a second)."));
      return;
    }
    const mb = (v) => (v === null ? null : v / 1048576);
    const series = [{ label: "RSS", values: m.rss.map(mb), colour: "#2563eb" }];
    if (m.cuda_allocated.some((v) => v !== null)) {
      series.push({ label: "CUDA allocated", values: m.cuda_allocated.map(mb), colour: "#dc2626" });
      series.push({ label: "CUDA reserved", values: m.cuda_reserved.map(mb), colour: "#f59e0b" });
    }
    const n = m.ts.length - 1;
    const blocks = [{ label: "Python blocks", values: m.py_blocks, colour: "#7c3aed" }];
    const chart = h("div", { id: "memory-chart-box" });
    const chart2 = h("div", { id: "blocks-chart-box" });
    const l1 = legend(series);
    const l2 = legend(blocks);
    clear($("memory-sub"), `RSS ${fmt.bytes(m.rss[n])}` + (m.py_blocks[n] !== null ? `, ${fmt.count(m.py_blocks[n])} Python blocks` : "") +
      (m.cuda_allocated[n] !== null ? `, CUDA ${fmt.bytes(m.cuda_allocated[n])} allocated` : ", no CUDA"));
    clear(body, l1, chart, l2, chart2);
    paintLegend(l1);
    paintLegend(l2);
    lines(chart, m.ts, series, { id: "memory-chart", width: widths.memory, yLabel: (v) => v.toFixed(0) + " MiB" });
    lines(chart2, m.ts, blocks, { id: "blocks-chart", width: widths.memory, yLabel: (v) => fmt.count(Math.round(v)) });
  }

  function showVariables(v) {
    const parts = [h("h3", {}, "Variables")];
    parts.push(v.variables.length === 0
      ? h("p", { class: "muted" }, "None tracked (probing.torch.exprs, e.g. loss@train_step).")
      : h("table", { id: "variables" }, h("thead", {}, h("tr", {}, h("th", {}, "function"), h("th", {}, "name"), h("th", {}, "value"), h("th", { class: "num" }, "step"))),
        h("tbody", {}, v.variables.map((x) => h("tr", {}, h("td", { class: "mono" }, x.func), h("td", { class: "mono" }, x.name), h("td", { class: "mono" }, x.value), h("td", { class: "num" }, String(x.step)))))));
    if (v.metrics.length) {
      parts.push(h("h3", {}, "Metrics"), h("table", { id: "metrics" }, h("tbody", {}, v.metrics.map((x) =>
        h("tr", {}, h("td", { class: "mono" }, x.name), h("td", { class: "num" }, String(x.value)))))));
    }
    clear($("variables-body"), parts);
  }

  // ---- settings ----
  async function loadSettings() {
    const body = $("settings-body");
    if (!overview || !overview.control) {
      clear(body, h("p", { class: "muted", id: "settings-none" }, overview && overview.info_error
        ? "Settings need the recorder to answer: " + overview.info_error
        : "Settings need a live process; " + (overview ? overview.description : "this target") + " has none."));
      return;
    }
    try {
      const c = await get(base + "/config");
      const status = h("div", { id: "settings-status", class: "muted" });
      clear(body, status, h("table", { id: "settings-table" },
        h("thead", {}, h("tr", {}, h("th", {}, "name"), h("th", {}, "value"), h("th", {}, "default"), h("th", {}, "meaning"))),
        h("tbody", {}, c.settings.map((st) => {
          const input = h("input", { class: "setting", value: st.value, "data-name": st.name, disabled: st.read_only });
          input.addEventListener("change", async () => {
            try {
              await post(base + "/config", { key: st.name, value: input.value });
              clear(status, "set " + st.name + " = " + input.value);
              status.className = "muted";
            } catch (e) {
              clear(status, e.message);
              status.className = "error";
              input.value = st.value;
            }
          });
          return h("tr", {}, h("td", { class: "mono" }, st.name), h("td", {}, input), h("td", { class: "mono" }, st.default), h("td", {}, st.description));
        }))));
    } catch (e) {
      clear(body, errorBox(e.message));
    }
  }

  // ---- SQL ----
  async function runQuery() {
    sqlRun.disabled = true;
    clear(sqlStatus, "running…");
    try {
      const r = await post(base + "/query", { sql: sqlInput.value });
      clear(sqlStatus, `${fmt.count(r.rows.length)} rows${r.truncated ? " (more not shown)" : ""} in ${r.elapsed_ms.toFixed(1)} ms`);
      clear(sqlResult, resultTable(r.columns, r.rows, { id: "sql-table" }));
    } catch (e) {
      clear(sqlStatus);
      clear(sqlResult, errorBox(e.message, "sql-error"));
    } finally {
      sqlRun.disabled = false;
    }
  }
  sqlRun.addEventListener("click", runQuery);
  sqlInput.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) runQuery();
  });

  // ---- refreshing ----
  const flameQuery = () => `${base}/flame?seconds=${flameWindow.value}` + (flameThread.value ? `&thread=${flameThread.value}` : "");
  const views = [
    ["stacks", () => get(base + "/stacks"), showStacks, "stacks-body"],
    ["flame", () => get(flameQuery()), showFlame, "flame-box"],
    ["steps", () => get(base + "/steps?last=100"), showSteps, "torch-body"],
    ["memory", () => get(base + "/memory?seconds=300"), showMemory, "memory-body"],
    ["variables", () => get(base + "/variables"), showVariables, "variables-body"],
  ];

  async function tick() {
    timer = null;
    if (stopped) return;
    if (!paused && !document.hidden) {
      // Everything at once: the overview and every view (the first look at a target decodes
      // its rings once, whichever request comes first).
      const [first, ...results] = await Promise.allSettled([get(base + "/overview"), ...views.map((v) => v[1]())]);
      if (stopped) return;
      measure();
      if (first.status === "rejected") {
        // The target itself cannot be read: say so in place of everything.
        clear($("overview"), errorBox(first.reason.message, "page-error"));
        if (!ready) for (const v of views) clear($(v[3]), errorBox(first.reason.message));
        schedule();
        return;
      }
      showOverview(first.value);
      results.forEach((r, i) => {
        const [, , show, box] = views[i];
        if (r.status === "fulfilled") {
          try { show(r.value); } catch (e) { clear($(box), errorBox("drawing failed: " + e.message)); }
        } else {
          clear($(box), errorBox(r.reason.message));
        }
      });
      if (!ready) {
        ready = true;
        if (overview.live && kind === "r") flameWindow.value = "10";  // a live one after all
        loadSettings();
        runQuery();
        performance.mark("probing:ready");
        document.body.dataset.ready = "1";
      }
    }
    schedule();
  }
  function schedule() {
    if (stopped) return;
    clear($("status"), overview && overview.live ? (paused ? "paused " : "refreshing every second ") : "", overview && overview.live ? pauseButton : null);
    if (overview && !overview.live && ready) return;  // a recording does not change
    timer = setTimeout(tick, REFRESH_MS);
  }
  pauseButton.addEventListener("click", () => {
    paused = !paused;
    pauseButton.textContent = paused ? "resume" : "pause";
  });
  const redrawFlame = () => get(flameQuery()).then((f) => { measure(); showFlame(f); }, (e) => clear(flameBox, errorBox(e.message)));
  flameWindow.addEventListener("change", redrawFlame);
  flameThread.addEventListener("change", redrawFlame);
  flameSearch.addEventListener("input", () => {
    flame.setSearch(flameSearch.value.trim());
    for (const li of document.querySelectorAll("#stacks-body li.frame")) {
      const m = flame.matcher();
      li.classList.toggle("match", Boolean(m && m(li.querySelector(".func").textContent)));
    }
  });
  tick();
  return () => {
    stopped = true;
    if (timer) clearTimeout(timer);
  };
}
