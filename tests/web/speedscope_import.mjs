// Loads one trace file into speedscope (the npm package's app, fetched by
// scripts/fetch-test-assets) in Debian's Chromium, headless, the way a user opens it:
// index.html#profileURL=..., both served from a local HTTP server this script starts. Prints
// one JSON line: whether the import finished (speedscope titles the page with the profile's
// name), the page's text, and every warning, error, dialog and uncaught exception the page
// produced while importing. Requests to anywhere else are refused and reported.
//
//   NODE_PATH=build/test-assets/node_modules node tests/web/speedscope_import.mjs \
//        --app build/test-assets/speedscope-1.25.0/release --file trace.json
// Exit codes: 0 a report was printed (the caller judges it), 1 the browser could not be driven.
import { createRequire } from "node:module";
import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import path from "node:path";

// require() finds it through NODE_PATH, as import would not.
const { chromium } = createRequire(import.meta.url)("playwright-core");

const args = {};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, "")] = process.argv[i + 1];
const app = path.resolve(args.app);
const file = path.resolve(args.file);
const timeout = Number(args.timeout || 60000);

const types = { ".html": "text/html", ".js": "text/javascript", ".css": "text/css",
  ".json": "application/json", ".wasm": "application/wasm" };
const server = createServer(async (req, res) => {
  const url = new URL(req.url, "http://localhost");
  const target = url.pathname === "/trace/" + path.basename(file)
    ? file : path.join(app, path.normalize(decodeURIComponent(url.pathname)).replace(/^(\.\.[/\\])+/, ""));
  try {
    const body = await readFile(target);
    res.writeHead(200, { "content-type": types[path.extname(target)] || "application/octet-stream" });
    res.end(body);
  } catch {
    res.writeHead(404);
    res.end();
  }
});
await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
const base = `http://127.0.0.1:${server.address().port}`;

const report = { loaded: false, title: "", text: "", warnings: [], errors: [], outside: [] };
let browser;
try {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  await context.route("**/*", (route) => {
    const u = new URL(route.request().url());
    if (u.origin === base) return route.continue();
    report.outside.push(u.href);
    return route.abort();
  });
  const page = await context.newPage();
  page.on("console", (m) => {
    if (m.type() === "warning") report.warnings.push(m.text());
    if (m.type() === "error") report.errors.push(m.text());
  });
  page.on("pageerror", (e) => report.errors.push("uncaught: " + String(e)));
  page.on("dialog", async (d) => {
    report.errors.push("dialog: " + d.message());
    await d.dismiss();
  });
  const name = path.basename(file);
  await page.goto(`${base}/index.html#profileURL=${encodeURIComponent("/trace/" + name)}`);
  // speedscope titles the page "<name> - speedscope" once the import is done.
  try {
    await page.waitForFunction((n) => document.title.startsWith(n), name, { timeout });
    report.loaded = true;
  } catch {
    report.errors.push("speedscope did not finish importing within " + timeout + " ms");
  }
  await page.waitForTimeout(500);  // anything logged just after
  report.title = await page.title();
  report.text = await page.evaluate(() => document.body.innerText);
} catch (e) {
  console.error(String(e));
  process.exitCode = 1;
} finally {
  if (browser) await browser.close();
  server.close();
}
console.log(JSON.stringify(report));
