// A flame graph drawn in SVG from the API's tree ([name, value, [children]] with a name
// table): callers below their callees, click a frame to zoom into it (click a frame below it,
// or "reset", to zoom out), search by regular expression (matches in magenta, their share of
// the samples in the status line). Zoom and search survive a refresh of the data.
import { clear, h, s } from "./dom.js";
import { count, percent } from "./format.js";

const ROW = 17;

function colour(name, depth) {
  if (depth <= 1) return "rgb(200,200,205)";  // "all" and the threads
  let hash = 0;
  for (let i = 0; i < name.length; i++) hash = (hash * 31 + name.charCodeAt(i)) >>> 0;
  const r = 205 + (hash % 50);
  const g = 80 + ((hash >>> 8) % 120);
  const b = 30 + ((hash >>> 16) % 50);
  return `rgb(${r},${g},${b})`;
}

function toTree(names, node, parent, depth, x) {
  const [name, value, kids] = node;
  const out = { name: names[name], value, parent, depth, x, children: [] };
  let at = x;
  for (const k of kids) {
    const c = toTree(names, k, out, depth + 1, at);
    out.children.push(c);
    at += c.value;
  }
  return out;
}

function pathOf(node) {
  const p = [];
  for (let n = node; n && n.parent; n = n.parent) p.unshift(n.name);
  return p;
}

export class FlameGraph {
  constructor(container, status) {
    this.container = container;
    this.status = status;
    this.root = null;
    this.zoomPath = [];
    this.search = "";
  }

  // `width`: pixels, when the caller measured them before changing the page.
  update(reply, width) {
    this.root = toTree(reply.names, reply.root, null, 0, 0);
    if (width) this.width = width;
    this.render();
  }

  zoomTo(node) {
    this.zoomPath = node ? pathOf(node) : [];
    this.render();
  }

  setSearch(text) {
    this.search = text;
    this.render();
  }

  // The zoomed node, found again by its path from the root after new data came.
  zoomNode() {
    let n = this.root;
    for (const name of this.zoomPath) {
      const next = n.children.find((c) => c.name === name);
      if (!next) break;
      n = next;
    }
    return n;
  }

  matcher() {
    if (!this.search) return null;
    try {
      const re = new RegExp(this.search, "i");
      return (name) => re.test(name);
    } catch (e) {
      const needle = this.search.toLowerCase();
      return (name) => name.toLowerCase().includes(needle);
    }
  }

  render() {
    const root = this.root;
    if (!root) return;
    if (root.value === 0) {
      clear(this.container, h("p", { class: "muted", id: "flame-empty" }, "No stack samples with Python frames in this window."));
      clear(this.status);
      return;
    }
    const width = Math.max(300, this.width || this.container.clientWidth || 1000);
    const zoom = this.zoomNode();
    const match = this.matcher();
    const scale = width / zoom.value;
    const visible = [];
    let maxDepth = 0;
    // The zoomed node's ancestors span the whole width; its subtree is scaled to it.
    for (let a = zoom.parent; a; a = a.parent) visible.push([a, 0, width]);
    const walk = (n) => {
      const px = (n.x - zoom.x) * scale;
      const pw = n.value * scale;
      if (pw < 0.4) return;
      visible.push([n, px, pw]);
      maxDepth = Math.max(maxDepth, n.depth);
      for (const c of n.children) walk(c);
    };
    walk(zoom);
    const height = (maxDepth + 1) * ROW + 2;
    const svg = s("svg", { class: "flame", id: "flame-svg", width, height, viewBox: `0 0 ${width} ${height}` });
    let matched = 0;
    const countMatches = (n) => {
      if (match(n.name)) { matched += n.value; return; }
      for (const c of n.children) countMatches(c);
    };
    if (match) countMatches(zoom);
    for (const [n, px, pw] of visible) {
      const y = height - (n.depth + 1) * ROW;
      const isMatch = match && match(n.name);
      const ancestor = n.depth < zoom.depth;
      const chars = Math.floor((pw - 6) / 6.6);
      const label = chars >= 3 ? (n.name.length > chars ? n.name.slice(0, chars - 1) + "…" : n.name) : "";
      const g = s("g", {
        class: "frame" + (isMatch ? " match" : "") + (ancestor ? " dim" : ""),
        "data-name": n.name, "data-depth": n.depth, "data-value": n.value,
      },
      s("title", {}, `${n.name}\n${count(n.value)} samples (${percent(n.value, root.value)})`),
      s("rect", { x: px.toFixed(1), y, width: Math.max(pw - 0.5, 0.5).toFixed(1), height: ROW - 1, rx: 2, fill: colour(n.name, n.depth) }),
      label ? s("text", { x: (px + 3).toFixed(1), y: y + ROW - 5 }, label) : null);
      g.addEventListener("click", () => this.zoomTo(n === zoom && n.parent ? n.parent : n));
      svg.append(g);
    }
    clear(this.container, svg);
    const parts = [`${count(root.value)} samples`];
    if (zoom !== root) parts.push(`zoomed into ${zoom.name}: ${count(zoom.value)} (${percent(zoom.value, root.value)})`);
    if (match) parts.push(`search: ${count(matched)} samples (${percent(matched, zoom.value)}) in frames matching "${this.search}"`);
    clear(this.status, parts.join(" · "));
    this.status.dataset.matched = match ? String(matched) : "";
  }
}
