// How numbers read on the page.
export function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = n;
  while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return (i === 0 ? v.toFixed(0) : v.toFixed(1)) + " " + units[i];
}

export function ms(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const v = seconds * 1e3;
  return (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)) + " ms";
}

export function duration(seconds) {
  if (!(seconds >= 0)) return "–";
  if (seconds < 60) return seconds.toFixed(1) + " s";
  if (seconds < 3600) return Math.floor(seconds / 60) + " min " + Math.round(seconds % 60) + " s";
  return Math.floor(seconds / 3600) + " h " + Math.round((seconds % 3600) / 60) + " min";
}

// Local date and time as 2026-12-01 15:39:49 (by hand: the locale formatter costs tens of
// milliseconds the first time it runs).
const pad = (n) => String(n).padStart(2, "0");
export function time(ts) {
  if (!ts) return "–";
  const d = new Date(ts * 1000);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

// 1234567 -> "1,234,567"
export function count(n) {
  if (n === null || n === undefined) return "–";
  return String(Math.round(Number(n))).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
}

export function percent(part, whole) {
  return whole > 0 ? (100 * part / whole).toFixed(1) + "%" : "–";
}
