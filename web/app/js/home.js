// `/`: the recorders on this machine (live and dead), grouped by job where ranks share one,
// and the targets named on the command line. With one target named, it opens at once.
import { get } from "./api.js";
import { clear, errorBox, h } from "./dom.js";
import * as fmt from "./format.js";

function processRow(p) {
  return h("tr", { class: "process", dataset: { pid: p.pid } },
    h("td", { class: "num" }, h("a", { href: p.url }, String(p.pid))),
    h("td", {}, h("span", { class: "badge " + p.state.split(" ")[0] }, p.state)),
    h("td", { class: "mono" }, p.command || "–"),
    h("td", {}, p.python_version || "–"),
    h("td", { class: "num" }, p.rank === null ? "–" : String(p.rank)),
    h("td", { class: "num" }, fmt.bytes(p.data_bytes)));
}

function processTable(rows) {
  return h("table", { class: "processes" },
    h("thead", {}, h("tr", {}, ["pid", "state", "command", "Python", "rank", "data"].map(
      (c, i) => h("th", { class: i === 0 || i >= 4 ? "num" : "" }, c)))),
    h("tbody", {}, rows.map(processRow)));
}

export function renderHome(app, navigate) {
  clear(app, h("p", { class: "muted" }, "Loading targets…"));
  let stopped = false;
  let timer = null;
  async function load(first) {
    let t;
    try {
      t = await get("/api/targets");
    } catch (e) {
      if (!stopped) clear(app, errorBox(e.message, "page-error"));
      return;
    }
    if (stopped) return;
    if (first && t.open) {
      navigate(t.open, true);
      return;
    }
    const byPid = new Map(t.processes.map((p) => [p.pid, p]));
    const inJob = new Set(t.jobs.flatMap((j) => j.pids));
    const parts = [];
    if (t.named.length) {
      parts.push(h("section", { class: "card", id: "named" },
        h("h2", {}, "Named on the command line"),
        h("table", {}, h("tbody", {}, t.named.map((n) => h("tr", { class: "named" },
          h("td", {}, n.error ? n.target : h("a", { href: n.url }, n.target)),
          h("td", {}, n.kind || ""),
          h("td", {}, n.error ? errorBox(n.error) : n.description)))))));
    }
    for (const j of t.jobs) {
      parts.push(h("section", { class: "card job", dataset: { job: j.job } },
        h("h2", {}, "Job ", h("span", { class: "mono" }, j.job),
          h("span", { class: "sub" }, j.pids.length + " ranks on this host"),
          j.url ? h("a", { href: j.url, class: "cluster-link" }, "all ranks of the job") : null),
        processTable(j.pids.map((p) => byPid.get(p)).filter(Boolean))));
    }
    const rest = t.processes.filter((p) => !inJob.has(p.pid));
    parts.push(h("section", { class: "card", id: "processes" },
      h("h2", {}, t.jobs.length ? "Other processes" : "Processes with the recorder",
        h("span", { class: "sub" }, "in " + t.data_dir)),
      rest.length ? processTable(rest)
        : h("p", { class: "muted" }, "None. Start one with PROBING=1 python train.py, or attach with probing -t PID inject.")));
    clear(app, parts);
    document.title = "probing: targets";
    timer = setTimeout(() => load(false), 3000);
  }
  load(true);
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
