// Two small charts in SVG: stacked bars (step time by part) and lines (memory over time).
import { clear, h, s } from "./dom.js";

const H = 220;
const PAD = { left: 64, right: 12, top: 10, bottom: 24 };

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function axes(svg, width, max, label) {
  const plotH = H - PAD.top - PAD.bottom;
  for (let i = 0; i <= 4; i++) {
    const v = (max * i) / 4;
    const y = PAD.top + plotH - (plotH * i) / 4;
    svg.append(s("line", { class: "axis", x1: PAD.left, x2: width - PAD.right, y1: y, y2: y }));
    svg.append(s("text", { x: PAD.left - 6, y: y + 4, "text-anchor": "end" }, label(v)));
  }
}

export function legend(series) {
  return h("div", { class: "legend" }, series.map((x) =>
    h("span", {}, h("i", { class: "swatch", "data-colour": x.colour }), x.label)));
}

// Colours of the legend's swatches, set through the CSSOM (no inline style attributes).
export function paintLegend(el) {
  for (const i of el.querySelectorAll("i.swatch")) i.style.background = i.dataset.colour;
}

// rows: [{...}], series: [{key, label, colour}], x: row -> label, value in the rows' unit.
// `width`: pixels, measured by the caller before it changed the page (no forced layout here).
export function stackedBars(container, rows, series, { x, yLabel, title, id, width: w }) {
  const width = Math.max(320, w || container.clientWidth || 800);
  const svg = s("svg", { class: "chart", id, width, height: H, viewBox: `0 0 ${width} ${H}` });
  const totals = rows.map((r) => series.reduce((a, k) => a + (r[k.key] || 0), 0));
  const max = niceMax(Math.max(0, ...totals));
  axes(svg, width, max, yLabel);
  const plotW = width - PAD.left - PAD.right;
  const plotH = H - PAD.top - PAD.bottom;
  const bw = plotW / Math.max(rows.length, 1);
  rows.forEach((r, i) => {
    const g = s("g", { class: "bar", "data-step": x(r) }, s("title", {}, title(r)));
    let y = PAD.top + plotH;
    for (const k of series) {
      const hgt = ((r[k.key] || 0) / max) * plotH;
      y -= hgt;
      if (hgt > 0) g.append(s("rect", { x: (PAD.left + i * bw + bw * 0.1).toFixed(1), y: y.toFixed(1), width: Math.max(bw * 0.8, 0.5).toFixed(1), height: hgt.toFixed(1), fill: k.colour, "data-part": k.key }));
    }
    svg.append(g);
  });
  if (rows.length) {
    svg.append(s("text", { x: PAD.left, y: H - 6 }, "step " + x(rows[0])));
    svg.append(s("text", { x: width - PAD.right, y: H - 6, "text-anchor": "end" }, "step " + x(rows[rows.length - 1])));
  }
  clear(container, svg);
  return svg;
}

// xs: seconds (Unix), series: [{label, values (null: none), colour}].
export function lines(container, xs, series, { yLabel, id, width: w }) {
  const width = Math.max(320, w || container.clientWidth || 800);
  const svg = s("svg", { class: "chart", id, width, height: H, viewBox: `0 0 ${width} ${H}` });
  const all = series.flatMap((x) => x.values.filter((v) => v !== null));
  const max = niceMax(Math.max(0, ...all));
  axes(svg, width, max, yLabel);
  const plotW = width - PAD.left - PAD.right;
  const plotH = H - PAD.top - PAD.bottom;
  const x0 = xs[0];
  const span = Math.max(xs[xs.length - 1] - x0, 1e-9);
  for (const ser of series) {
    let d = "";
    let pen = "M";
    ser.values.forEach((v, i) => {
      if (v === null) { pen = "M"; return; }
      const px = PAD.left + ((xs[i] - x0) / span) * plotW;
      const py = PAD.top + plotH - (v / max) * plotH;
      d += `${pen}${px.toFixed(1)},${py.toFixed(1)}`;
      pen = "L";
    });
    if (d) svg.append(s("path", { d, fill: "none", stroke: ser.colour, "stroke-width": 1.6, class: "line", "data-series": ser.label }));
  }
  if (xs.length) {
    svg.append(s("text", { x: PAD.left, y: H - 6 }, `-${Math.round(span)} s`));
    svg.append(s("text", { x: width - PAD.right, y: H - 6, "text-anchor": "end" }, "latest"));
  }
  clear(container, svg);
  return svg;
}
