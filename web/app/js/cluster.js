// `/cluster/<job>`: every rank of a training job. Its ranks with their state and step, a
// rank x step heatmap of step time (each cell against the median of its step), the straggler
// table and the hang report (read every ten seconds: they fetch every rank's data), the ranks'
// stacks merged (ranks with the same stack share a group, the odd ones out first), and SQL over
// cluster.<table>. Read again every two seconds; a rank that does not answer says why.
import { get, post } from "./api.js";
import { clear, errorBox, h, s } from "./dom.js";
import * as fmt from "./format.js";
import { resultTable } from "./table.js";

const REFRESH_MS = 2000;
const DIAGNOSIS_MS = 10000;

function section(id, title, ...body) {
  return h("section", { class: "card", id }, h("h2", {}, title, h("span", { class: "sub", id: id + "-sub" })), body);
}

// The lower median: with two ranks, the faster one, so the slower one shows.
function median(values) {
  const v = values.filter((x) => x !== null).sort((a, b) => a - b);
  return v.length ? v[Math.floor((v.length - 1) / 2)] : null;
}

// White at the step's median, deeper red the slower a rank was (2x and more: the deepest),
// a little blue where it was faster.
function heat(ratio) {
  const t = Math.max(0, Math.min(1, ratio - 1));
  const cool = Math.max(0, Math.min(1, 1 - ratio));
  return `rgb(${Math.round(255 - cool * 60)},${Math.round(255 - t * 200 - cool * 20)},${Math.round(255 - t * 215)})`;
}

function heatmap(box, st, width) {
  const left = 64;
  const cw = Math.max(4, Math.min(24, (width - left - 10) / Math.max(st.steps.length, 1)));
  const ch = 20;
  const height = st.ranks.length * ch + 24;
  const svg = s("svg", { class: "heatmap", id: "step-heatmap", width: left + cw * st.steps.length + 10, height });
  const medians = st.steps.map((_, j) => median(st.wall.map((row) => row[j])));
  st.ranks.forEach((rank, i) => {
    svg.append(s("text", { x: left - 8, y: i * ch + 14, "text-anchor": "end" }, "rank " + rank));
    st.steps.forEach((step, j) => {
      const v = st.wall[i][j];
      const m = medians[j];
      svg.append(s("rect", {
        class: "cell", "data-rank": rank, "data-step": step, x: left + j * cw, y: i * ch,
        width: cw - 1, height: ch - 1, fill: v === null ? "#f3f4f6" : heat(m ? v / m : 1),
      }, s("title", {}, v === null ? `rank ${rank} step ${step}: not traced`
        : `rank ${rank} step ${step}: ${fmt.ms(v)} (median of the step ${fmt.ms(m)})`)));
    });
  });
  if (st.steps.length) {
    svg.append(s("text", { x: left, y: height - 6 }, "step " + st.steps[0]));
    svg.append(s("text", { x: left + cw * st.steps.length, y: height - 6, "text-anchor": "end" }, "step " + st.steps[st.steps.length - 1]));
  }
  clear(box, svg);
}

// Arrival per rank and step: how long after the first rank each one reached the step's
// meetings (white: with the first; deeper red the later, the deepest at the latest arrival
// shown, or 20 ms when all are closer than that).
function arrivalMap(st, width) {
  const ranks = [...st.ranks].sort((a, b) => a.rank - b.rank);
  const steps = [...new Set(ranks.flatMap((r) => r.arrivals.map(([step]) => step)))].sort((a, b) => a - b);
  if (!steps.length) return null;
  const left = 64;
  const cw = Math.max(4, Math.min(24, (width - left - 10) / steps.length));
  const ch = 20;
  const height = ranks.length * ch + 24;
  const top = Math.max(20, ...ranks.flatMap((r) => r.arrivals.map(([, ms]) => ms)));
  const svg = s("svg", { class: "heatmap", id: "arrival-heatmap", width: left + cw * steps.length + 10, height });
  ranks.forEach((r, i) => {
    const by = new Map(r.arrivals);
    svg.append(s("text", { x: left - 8, y: i * ch + 14, "text-anchor": "end" }, "rank " + r.rank));
    steps.forEach((step, j) => {
      const ms = by.has(step) ? by.get(step) : null;
      svg.append(s("rect", {
        class: "cell", "data-rank": r.rank, "data-step": step, x: left + j * cw, y: i * ch,
        width: cw - 1, height: ch - 1, fill: ms === null ? "#f3f4f6" : heat(1 + ms / top),
      }, s("title", {}, ms === null ? `rank ${r.rank} step ${step}: not compared`
        : `rank ${r.rank} step ${step}: arrived ${fmt.ms(ms / 1000)} after the first rank`)));
    });
  });
  svg.append(s("text", { x: left, y: height - 6 }, "step " + steps[0]));
  svg.append(s("text", { x: left + cw * steps.length, y: height - 6, "text-anchor": "end" }, "step " + steps[steps.length - 1]));
  return svg;
}

export function renderCluster(app, job) {
  const base = `/api/cluster/${encodeURIComponent(job)}`;
  let stopped = false;
  let timer = null;
  let ready = false;
  const sqlInput = h("textarea", { id: "sql-input", spellcheck: "false" },
    "SELECT rank, count(*) AS samples FROM cluster.stacks WHERE depth = 0 GROUP BY rank ORDER BY rank");
  const sqlRun = h("button", { id: "sql-run", class: "primary" }, "Run");
  const sqlStatus = h("span", { id: "sql-status" });
  const sqlResult = h("div", { id: "sql-result", class: "scroll" });
  clear(document.getElementById("crumbs"), " › job ", h("span", { id: "job-name", class: "mono" }, job));
  clear(app,
    section("ranks", "Ranks", h("div", { id: "ranks-body" }, h("p", { class: "muted" }, "Looking for the job's ranks…"))),
    section("heat", "Step time by rank", h("p", { class: "muted" }, "Each cell is one rank's step, from the end of its step before; white is the step's median, red slower."),
      h("div", { id: "heat-body", class: "scroll" }, h("p", { class: "muted" }, "Loading…"))),
    section("strag", "Stragglers", h("p", { class: "muted" }, "The rank that arrives last at each step's meetings (the start of backward, before the gradients' all-reduce, and each collective called from Python): the others wait for it. Median over the last 20 steps."),
      h("div", { id: "strag-body", class: "scroll" }, h("p", { class: "muted" }, "Loading…"))),
    section("hang", "Hang report", h("div", { id: "hang-body", class: "scroll" }, h("p", { class: "muted" }, "Loading…"))),
    section("cstacks", "Stacks of every rank", h("div", { id: "cstacks-body" }, h("p", { class: "muted" }, "Loading…"))),
    section("sql", "SQL over every rank", h("p", { class: "muted" }, "One read-only statement; ",
      h("code", {}, "cluster.stacks, cluster.torch_trace, cluster.memory, cluster.backtrace, …"), " have rank, host and pid."),
    sqlInput, h("div", { class: "controls" }, sqlRun, sqlStatus), sqlResult));
  const $ = (id) => document.getElementById(id);

  function showRanks(c) {
    clear($("ranks-sub"), `${c.members.length} of ${c.world_size} ranks, found through ${c.how}`);
    clear($("ranks-body"), h("table", { id: "ranks-table" },
      h("thead", {}, h("tr", {}, ["rank", "state", "step", "host", "pid", "address", "clock offset", ""].map((t) => h("th", {}, t)))),
      h("tbody", {}, c.members.map((m) => h("tr", { class: "rank", dataset: { rank: m.rank, state: m.state } },
        h("td", { class: "num" }, String(m.rank)),
        h("td", {}, h("span", { class: "badge " + (m.state === "running" ? "running" : m.state === "dead" ? "dead" : "stopped") }, m.state)),
        h("td", { class: "num" }, m.step === null ? "–" : String(m.step)),
        h("td", {}, m.host || "–"),
        h("td", { class: "num" }, m.url ? h("a", { href: m.url }, String(m.pid)) : String(m.pid || "–")),
        h("td", { class: "mono" }, m.address || "–"),
        h("td", { class: "num" }, m.clock_offset_s === null ? "–" : fmt.ms(m.clock_offset_s)),
        h("td", { class: "muted" }, m.error))))));
  }

  function showSteps(st) {
    clear($("heat-sub"), st.coverage + (st.steps.length ? `, steps ${st.steps[0]}–${st.steps[st.steps.length - 1]}` : ""));
    if (!st.steps.length) {
      clear($("heat-body"), h("p", { class: "muted", id: "heat-empty" }, "No PyTorch steps traced on any rank yet."));
      return;
    }
    heatmap($("heat-body"), st, $("heat").clientWidth - 40);
  }

  function showStacks(m) {
    clear($("cstacks-sub"), m.coverage);
    clear($("cstacks-body"), h("div", { class: "threads" }, m.groups.map((g) => h("div", {
      class: "thread group" + (g.holds_gil ? " gil" : ""), dataset: { ranks: g.ranks.join(",") },
    },
    h("div", {}, h("span", { class: "name" }, (g.ranks.length === 1 ? "rank " : "ranks ") + g.ranks.join(", ")),
      " ", h("span", { class: "muted" }, g.thread_name), g.holds_gil ? h("span", { class: "gilmark" }, "● holds the GIL") : null),
    h("ol", {}, g.frames.length ? g.frames.map((f) => h("li", { class: "frame" },
      h("span", { class: "func" }, f.func), " ", h("span", { class: "file" }, `(${f.file}:${f.lineno === null ? "?" : f.lineno})`)))
      : h("li", { class: "muted" }, "no Python frames"))))));
  }

  function showStragglers(st) {
    clear($("strag-sub"), st.coverage + (st.problem ? "" : `, steps ${st.first_step}–${st.last_step}, arrival at ${st.arrival}`));
    if (st.problem) {
      clear($("strag-body"), h("p", { class: "muted", id: "strag-problem" }, st.problem));
      return;
    }
    const late = st.ranks.filter((r) => r.late);
    clear($("strag-body"),
      h("p", { id: "strag-verdict", class: late.length ? "verdict bad" : "verdict" }, late.length
        ? late.map((r) => `rank ${r.rank} arrives ${r.late_ms.toFixed(1)} ms late` + (r.frame ? `, in ${r.frame}` : "")).join("; ")
        : "No straggler: every rank arrives within 5 ms (or 10% of its step) of the first."),
      resultTable(["rank", "late (ms, median)", "late (ms, max)", "step (ms)", "steps", "where it was while the others waited", "share"],
        st.ranks.map((r) => [r.rank, r.late_ms, r.max_late_ms, r.step_ms, r.steps, r.frame || null, r.frame_share]),
        { id: "strag-table" }),
      h("p", { class: "muted" }, "Arrival by rank and step: how long after the first rank each one reached the step's meetings (white: with the first, red: later)."),
      arrivalMap(st, $("strag").clientWidth - 40));
  }

  function showHang(hr) {
    clear($("hang-body"),
      h("p", { id: "hang-verdict", class: hr.culprits.length ? "verdict bad" : "verdict" }, hr.verdict || "No verdict."),
      resultTable(["rank", "state", "step", "collective", "op", "stalled (s)", "frame", "why"],
        hr.ranks.map((r) => [r.rank, r.state, r.step, r.collective, r.op || null, r.state === "ok" ? r.stalled_s : null, r.frames[0] || null, r.why || null]),
        { id: "hang-table" }));
  }

  let diagnosedAt = 0;
  async function diagnose() {
    diagnosedAt = Date.now();
    const [st, hr] = await Promise.allSettled([get(base + "/stragglers?steps=20"), get(base + "/hang")]);
    if (stopped) return;
    for (const [r, show, box] of [[st, showStragglers, "strag-body"], [hr, showHang, "hang-body"]]) {
      if (r.status === "fulfilled") {
        try { show(r.value); } catch (e) { clear($(box), errorBox("drawing failed: " + e.message)); }
      } else {
        clear($(box), errorBox(r.reason.message));
      }
    }
  }

  async function runQuery() {
    sqlRun.disabled = true;
    clear(sqlStatus, "running…");
    try {
      const r = await post(base + "/query", { sql: sqlInput.value });
      clear(sqlStatus, `${fmt.count(r.rows.length)} rows${r.truncated ? " (more not shown)" : ""} in ${r.elapsed_ms.toFixed(1)} ms` + (r.coverage ? "; " + r.coverage : ""));
      clear(sqlResult, resultTable(r.columns, r.rows, { id: "sql-table" }));
    } catch (e) {
      clear(sqlStatus);
      clear(sqlResult, errorBox(e.message, "sql-error"));
    } finally {
      sqlRun.disabled = false;
    }
  }
  sqlRun.addEventListener("click", runQuery);

  const views = [
    [() => get(base + "/overview"), showRanks, "ranks-body"],
    [() => get(base + "/steps?last=60"), showSteps, "heat-body"],
    [() => get(base + "/stacks"), showStacks, "cstacks-body"],
  ];
  async function tick() {
    timer = null;
    if (stopped) return;
    if (!document.hidden) {
      const results = await Promise.allSettled(views.map((v) => v[0]()));
      if (stopped) return;
      results.forEach((r, i) => {
        const [, show, box] = views[i];
        if (r.status === "fulfilled") {
          try { show(r.value); } catch (e) { clear($(box), errorBox("drawing failed: " + e.message)); }
        } else {
          clear($(box), errorBox(r.reason.message, i === 0 ? "page-error" : undefined));
        }
      });
      if (Date.now() - diagnosedAt >= DIAGNOSIS_MS) diagnose();
      if (!ready) {
        ready = true;
        runQuery();
        document.body.dataset.ready = "1";
      }
    }
    clear($("status"), "refreshing every 2 s");
    timer = setTimeout(tick, REFRESH_MS);
  }
  document.title = "probing: job " + job;
  tick();
  return () => {
    stopped = true;
    if (timer) clearTimeout(timer);
  };
}
