// The single-page app: one page per route, drawn by its module; links inside the app move
// without reloading. Routes: / (targets), /p/<pid> (a process), /r/<n> (a named target),
// /cluster/<job> (every rank of a training job).
import { clear, errorBox, h } from "./dom.js";
import { renderCluster } from "./cluster.js";
import { renderHome } from "./home.js";
import { renderTarget } from "./target.js";

let leave = null;  // stops the current page's refreshing

function route() {
  if (leave) leave();
  leave = null;
  const app = document.getElementById("app");
  const banner = document.getElementById("banner");
  banner.hidden = true;
  clear(document.getElementById("crumbs"));
  clear(document.getElementById("status"));
  const path = location.pathname;
  let m;
  try {
    if (path === "/") {
      leave = renderHome(app, navigate);
    } else if ((m = path.match(/^\/(p|r)\/(\d+)$/))) {
      leave = renderTarget(app, m[1], m[2]);
    } else if ((m = path.match(/^\/cluster\/([^/]+)$/))) {
      leave = renderCluster(app, decodeURIComponent(m[1]));
    } else {
      clear(app, errorBox("No page " + path + " here.", "page-error"), h("a", { href: "/" }, "All targets"));
    }
  } catch (e) {
    clear(app, errorBox("This page failed: " + e.message, "page-error"));
  }
}

export function navigate(url, replace) {
  if (replace) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
  route();
}

document.addEventListener("click", (e) => {
  const a = e.target.closest && e.target.closest("a[href]");
  if (!a || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || !/^\/($|p\/|r\/|cluster\/)/.test(url.pathname)) return;
  if (url.pathname === location.pathname && url.hash) return;  // a section of this page
  e.preventDefault();
  navigate(url.pathname + url.search);
});
window.addEventListener("popstate", route);
window.addEventListener("error", (e) => {
  const banner = document.getElementById("banner");
  banner.textContent = "A script of this page failed: " + e.message;
  banner.hidden = false;
});
route();
