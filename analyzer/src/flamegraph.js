// The flame graph's behaviour, embedded in every SVG probing-analyze writes
// (analyzer/src/flamegraph_svg.cc). Click a frame: zoom into it. Click a faded parent, the
// "Reset zoom" button or press Escape: zoom out. Ctrl-F or "/": search by regular expression;
// matches turn magenta and their share of all samples shows at the bottom right. The address
// may say what to show: out.svg#search=REGEX, out.svg#zoom=FRAME-ID.
"use strict";
(function () {
  var svg = document.documentElement;
  var W = +svg.getAttribute("width");
  var PAD = 10, CHAR_W = 12 * 0.59;
  var frames = [], byId = {}, total = 0, zoomed = null, searchRe = null;
  var details, matched, unzoom, searchBtn;

  function fit(name, w) {
    var n = Math.floor((w - 6) / CHAR_W);
    if (n < 3) return "";
    return name.length <= n ? name : name.substring(0, n - 2) + "..";
  }
  function place(f, x, w) {
    f.g.style.display = "";
    f.r.setAttribute("x", x.toFixed(2));
    f.r.setAttribute("width", w.toFixed(2));
    f.t.setAttribute("x", (x + 3).toFixed(2));
    f.t.textContent = fit(f.name, w);
  }
  function zoom(f) {
    zoomed = f;
    var scale = (W - 2 * PAD) / f.n;
    frames.forEach(function (e) {
      var inside = e.sx >= f.sx && e.sx + e.n <= f.sx + f.n;
      var around = e.sx <= f.sx && e.sx + e.n >= f.sx + f.n;
      if (e.d < f.d && around) {
        place(e, PAD, W - 2 * PAD);
        e.g.classList.add("parent");
      } else if (e.d >= f.d && inside) {
        place(e, PAD + (e.sx - f.sx) * scale, e.n * scale);
        e.g.classList.remove("parent");
      } else {
        e.g.style.display = "none";
      }
    });
    unzoom.classList.remove("hide");
  }
  function resetZoom() {
    zoomed = null;
    var scale = (W - 2 * PAD) / total;
    frames.forEach(function (e) {
      place(e, PAD + e.sx * scale, e.n * scale);
      e.g.classList.remove("parent");
    });
    unzoom.classList.add("hide");
  }
  function search(re) {
    searchRe = re;
    var spans = [];
    frames.forEach(function (e) {
      var hit = re !== null && re.test(e.name);
      e.r.setAttribute("fill", hit ? "rgb(230,0,230)" : e.fill);
      if (hit) spans.push([e.sx, e.sx + e.n]);
    });
    if (re === null) {
      matched.textContent = "";
      searchBtn.textContent = "Search";
      return;
    }
    // Nested matches count once: the union of the matched sample ranges.
    spans.sort(function (a, b) { return a[0] - b[0]; });
    var covered = 0, end = -1;
    spans.forEach(function (s) {
      if (s[0] >= end) { covered += s[1] - s[0]; end = s[1]; }
      else if (s[1] > end) { covered += s[1] - end; end = s[1]; }
    });
    matched.textContent = "Matched: " + (total ? (100 * covered / total).toFixed(1) : "0.0") + "%";
    searchBtn.textContent = "Reset search";
  }
  function askSearch() {
    if (searchRe !== null) { search(null); return; }
    var term = window.prompt("Search frames (regular expression):", "");
    if (term === null || term === "") return;
    try { search(new RegExp(term)); } catch (err) { window.alert("Not a regular expression: " + err.message); }
  }
  function fromAddress() {
    var h = decodeURIComponent(window.location.hash.substring(1));
    h.split("&").forEach(function (kv) {
      var eq = kv.indexOf("=");
      if (eq < 0) return;
      var k = kv.substring(0, eq), v = kv.substring(eq + 1);
      if (k === "zoom" && byId[v]) zoom(byId[v]);
      if (k === "search" && v !== "") { try { search(new RegExp(v)); } catch (err) { /* ignored */ } }
    });
  }

  details = document.getElementById("details");
  matched = document.getElementById("matched");
  unzoom = document.getElementById("unzoom");
  searchBtn = document.getElementById("search");
  total = +document.getElementById("frames").getAttribute("data-total");
  var gs = document.querySelectorAll("g.f");
  for (var i = 0; i < gs.length; i++) {
    var g = gs[i];
    var f = {
      g: g, r: g.querySelector("rect"), t: g.querySelector("text"),
      sx: +g.getAttribute("data-x"), n: +g.getAttribute("data-n"), d: +g.getAttribute("data-d"),
      name: g.getAttribute("data-name"), tip: g.querySelector("title").textContent
    };
    f.fill = f.r.getAttribute("fill");
    frames.push(f);
    byId[g.id] = f;
    g.addEventListener("click", (function (f) {
      return function (ev) { ev.stopPropagation(); if (f === zoomed) resetZoom(); else zoom(f); };
    })(f));
    g.addEventListener("mouseover", (function (f) {
      return function () { details.textContent = f.tip; };
    })(f));
    g.addEventListener("mouseout", function () { details.textContent = " "; });
  }
  unzoom.addEventListener("click", resetZoom);
  searchBtn.addEventListener("click", askSearch);
  window.addEventListener("keydown", function (ev) {
    if (((ev.ctrlKey || ev.metaKey) && ev.key === "f") || ev.key === "/") { ev.preventDefault(); askSearch(); }
    else if (ev.key === "Escape") { resetZoom(); search(null); }
  });
  window.addEventListener("hashchange", fromAddress);
  fromAddress();
})();
