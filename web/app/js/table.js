// A table of rows as the API gives them (columns + rows of cells): NULL shown as NULL.
import { h } from "./dom.js";

export function resultTable(columns, rows, { id, numeric } = {}) {
  const isNum = columns.map((_, i) => numeric ? numeric[i] : rows.length > 0 && rows.every((r) => r[i] === null || typeof r[i] === "number"));
  return h("table", { id },
    h("thead", {}, h("tr", {}, columns.map((c, i) => h("th", { class: isNum[i] ? "num" : "" }, c)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, r.map((v, i) => v === null
      ? h("td", { class: "null" }, "NULL")
      : h("td", { class: isNum[i] ? "num" : "mono" }, typeof v === "number" && !Number.isInteger(v) ? v.toPrecision(6) : String(v)))))));
}
