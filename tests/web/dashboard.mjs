// Drives `probing web` in Debian's Chromium, headless, with every request to anywhere but the
// dashboard refused (and counted: the page must need nothing from elsewhere). One scenario per
// run; a failed check exits 1 with what was seen, and leaves a screenshot in --out.
//
//   node tests/web/dashboard.mjs --scenario live --url http://127.0.0.1:PORT/ --pid PID \
//        --hot prepare_batch --out DIR
// Scenarios: live (a training process), recording (one .ptrace given to probing web), gone
// (the target dies while its page is open), cluster (a 2-rank job, --job RUN_ID), token (a
// dashboard started with --token).
// The driver is playwright-core (pinned, fetched by scripts/fetch-test-assets; NODE_PATH
// finds it); it never downloads a browser.
import assert from "node:assert/strict";
import { createRequire } from "node:module";

// require() finds it through NODE_PATH, as import would not.
const { chromium } = createRequire(import.meta.url)("playwright-core");

const args = {};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, "")] = process.argv[i + 1];
const base = new URL(args.url);
const out = args.out || ".";
const log = (...m) => console.log(new Date().toISOString().slice(11, 23), ...m);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const context = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
const outside = [];
await context.route("**/*", (route) => {
  const u = new URL(route.request().url());
  if (u.origin === base.origin) return route.continue();
  outside.push(u.href);
  return route.abort();
});
const page = await context.newPage();
const consoleErrors = [];
page.on("pageerror", (e) => consoleErrors.push(String(e)));

async function waitFor(what, fn, timeout = 20000) {
  const end = Date.now() + timeout;
  let last;
  while (Date.now() < end) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e.message;
    }
    await page.waitForTimeout(200);
  }
  throw new Error(`timed out waiting for ${what} (last: ${JSON.stringify(last)})`);
}

const text = (sel) => page.locator(sel).first().innerText();
const report = {};

async function openTargetFromHome(pid) {
  await page.goto(new URL("/", base).href);
  const link = page.locator(`tr.process[data-pid="${pid}"] a`);
  await link.waitFor({ timeout: 20000 });
  await link.click();
  await page.waitForURL(`**/p/${pid}`);
  await page.locator("body[data-ready='1']").waitFor({ timeout: 20000 });
}

// The views every target shows: stacks, flame graph (zoom, search, per thread), SQL, steps.
async function checkViews(hot, { live }) {
  if (live) {
    // Threads, as text: the hot function in the main thread's stack, asked about every second.
    await waitFor(`${hot} in the stacks`, async () =>
      (await page.locator("#stacks-body li.frame .func", { hasText: hot }).count()) > 0, 40000);
  } else {
    // A recording: each thread's last stack with Python frames, as the samples had it.
    await waitFor("stacks", async () => (await page.locator("#stacks-body .thread li.frame").count()) > 0);
    assert.match(await text("#stacks-sub"), /latest samples/);
  }
  const gil = await page.locator("#stacks-body .thread.gil").count();
  assert.ok(gil <= 1, `${gil} threads marked as holding the GIL`);
  report.threads = await page.locator("#stacks-body .thread").count();

  // The flame graph has it; a click zooms it to the whole width.
  const frame = page.locator(`#flame-svg g.frame[data-name^="${hot} ("]`).first();
  await frame.waitFor({ timeout: 20000 });
  const svgWidth = Number(await page.locator("#flame-svg").getAttribute("width"));
  await frame.click();
  await waitFor("the zoomed frame to span the graph", async () => {
    const w = Number(await page.locator(`#flame-svg g.frame[data-name^="${hot} ("] rect`).first().getAttribute("width"));
    return w > svgWidth * 0.95;
  });
  assert.match(await text("#flame-status"), /zoomed into/);
  await page.click("#flame-reset");
  // Search: the matches turn magenta and their share is counted.
  await page.fill("#flame-search", hot);
  await waitFor("search matches", async () => Number(await page.locator("#flame-status").getAttribute("data-matched")) > 0);
  const matched = await page.locator("#flame-svg g.frame.match").count();
  assert.ok(matched > 0, "no frame marked as a match");
  const fill = await page.locator("#flame-svg g.frame.match rect").first().evaluate((r) => getComputedStyle(r).fill);
  assert.equal(fill, "rgb(230, 0, 230)");
  report.search = await text("#flame-status");
  // One thread: only its root is left.
  const options = await page.locator("#flame-thread option").allInnerTexts();
  const main = options.findIndex((o) => o.startsWith("MainThread"));
  assert.ok(main > 0, "no MainThread in " + options);
  await page.selectOption("#flame-thread", { index: main });
  await waitFor("one thread in the flame graph", async () => {
    const roots = await page.locator('#flame-svg g.frame[data-depth="1"]').evaluateAll((gs) => gs.map((g) => g.dataset.name));
    return roots.length === 1 && roots[0].startsWith("MainThread (");
  });

  // SQL: a read, and a write refused.
  await page.fill("#sql-input", `SELECT count(*) AS n FROM python.stacks WHERE func = '${hot}'`);
  await page.click("#sql-run");
  await waitFor("the query's answer", async () => Number(await page.locator("#sql-table tbody td").first().innerText()) > 0);
  report.sql = await text("#sql-status");
  await page.fill("#sql-input", "CREATE TABLE t(x)");
  await page.click("#sql-run");
  await page.locator("#sql-error").waitFor();
  assert.match(await text("#sql-error"), /only reading statements/);

  // PyTorch: the step chart and the modules.
  const chart = page.locator("#step-chart");
  await chart.waitFor({ timeout: 20000 });
  const first = Number(await chart.getAttribute("data-last-step"));
  const bars = await page.locator("#step-chart g.bar").count();
  assert.ok(bars > 0, "no bars");
  assert.ok(await page.locator("#modules tbody tr").count() > 0, "no modules");
  if (live) {
    // It grows while the page stays.
    const grown = await waitFor("the step chart to move on", async () => {
      const now = Number(await page.locator("#step-chart").getAttribute("data-last-step"));
      const n = await page.locator("#step-chart g.bar").count();
      return now > first && n >= bars ? { now, n } : null;
    });
    report.steps = { first, ...grown, bars_before: bars };
  } else {
    report.steps = { last: first, bars };
  }
  // Memory: an RSS curve.
  await page.locator('#memory-chart path.line[data-series="RSS"]').waitFor({ timeout: 20000 });
}

async function finish(ok) {
  await page.screenshot({ path: `${out}/dashboard-${args.scenario}${ok ? "" : "-failed"}.png`, fullPage: true }).catch(() => {});
  await browser.close();
}

try {
  const hot = args.hot;
  if (args.scenario === "live") {
    await openTargetFromHome(args.pid);
    await checkViews(hot, { live: true });
    await waitFor("the variable loss", async () =>
      (await page.locator("#variables td", { hasText: "loss" }).count()) > 0);
    await page.locator("#settings-table input[data-name='probing.sample_rate']").waitFor();
    // A bad setting is refused in place; the old value stays.
    await page.fill("#settings-table input[data-name='probing.sample_rate']", "7");
    await page.press("#settings-table input[data-name='probing.sample_rate']", "Enter");
    await page.locator("#settings-status.error").waitFor();
    report.setting_error = await text("#settings-status");
    assert.match(await text("#target-state"), /running/);
  } else if (args.scenario === "recording") {
    // One recording given: / opens it.
    await page.goto(new URL("/", base).href);
    await page.waitForURL("**/r/0");
    await page.locator("body[data-ready='1']").waitFor({ timeout: 20000 });
    assert.match(await text("#target-state"), /recorded/);
    assert.equal(await page.locator("#flame-window").inputValue(), "0");
    await checkViews(hot, { live: false });
    assert.match(await text("#settings-none"), /needs a live process|need a live process/);
    assert.match(await text("#status"), /^$/);  // nothing refreshes
  } else if (args.scenario === "gone") {
    await openTargetFromHome(args.pid);
    await waitFor("stacks", async () => (await page.locator("#stacks-body li.frame").count()) > 0);
    process.kill(Number(args.pid), "SIGKILL");
    await waitFor("the banner saying the process is gone", async () =>
      /is gone/.test(await page.locator("#banner").innerText()) && await page.locator("#banner").isVisible());
    await waitFor("stacks from the samples it left", async () =>
      (await page.locator("#stacks-note").count()) > 0 && (await page.locator("#stacks-body li.frame").count()) > 0);
    report.banner = await text("#banner");
    report.note = await text("#stacks-note");
    assert.match(await text("#target-state"), /gone/);
    // The page stays whole: the flame graph and SQL still answer from the rings.
    await page.fill("#sql-input", "SELECT count(*) FROM python.stacks");
    await page.click("#sql-run");
    await waitFor("a query on the dead process's rings", async () => Number(await page.locator("#sql-table tbody td").first().innerText()) > 0);
  } else if (args.scenario === "cluster") {
    // From / to the job, as a user would.
    await page.goto(new URL("/", base).href);
    const link = page.locator(`section.job[data-job="${args.job}"] a.cluster-link`);
    await link.waitFor({ timeout: 20000 });
    await link.click();
    await page.waitForURL(`**/cluster/${args.job}`);
    await page.locator("body[data-ready='1']").waitFor({ timeout: 30000 });
    await waitFor("both ranks running", async () =>
      (await page.locator('#ranks-table tr.rank[data-state="running"]').count()) === 2);
    report.ranks = await page.locator("#ranks-table tr.rank").count();
    await waitFor("the heatmap", async () => (await page.locator("#step-heatmap rect.cell").count()) > 0, 30000);
    report.cells = await page.locator("#step-heatmap rect.cell").count();
    await waitFor("merged stacks", async () => (await page.locator("#cstacks-body .group").count()) > 0);
    assert.match(await text("#cstacks-sub"), /2 of 2 ranks answered/);
    await waitFor("the SQL answer", async () => (await page.locator("#sql-table tbody tr").count()) === 2);
    assert.match(await text("#sql-status"), /2 of 2 ranks answered/);
    // The straggler table and the hang report (read with the first refresh).
    await waitFor("the straggler table", async () => (await page.locator("#strag-table tbody tr").count()) === 2
      || (await page.locator("#strag-problem").count()) === 1, 30000);
    if ((await page.locator("#strag-table").count()) === 1)
      assert.equal(await page.locator("#arrival-heatmap rect.cell").count() % 2, 0, "a row of arrivals per rank");
    await waitFor("the hang report", async () => (await page.locator("#hang-table tbody tr").count()) === 2, 30000);
    report.hang = await text("#hang-verdict");
    await page.screenshot({ path: `${out}/dashboard-cluster-job.png`, fullPage: true });
    // A rank's pid leads to its own page.
    await page.locator('#ranks-table tr.rank[data-rank="1"] a').click();
    await page.waitForURL("**/p/*");
    await page.locator("body[data-ready='1']").waitFor({ timeout: 20000 });
  } else if (args.scenario === "token") {
    const token = args.token;
    await page.goto(new URL("/", base).href);
    await page.locator("#page-error").waitFor();
    report.without = await text("#page-error");
    assert.match(report.without, /needs its token/);
    await page.goto(new URL("/p/1?token=wrong", base).href);
    assert.match(await text("#page-error"), /wrong token/);
    await page.goto(new URL("/?token=" + encodeURIComponent(token), base).href);
    assert.equal(new URL(page.url()).search, "", "the token stays in the address bar");
    await page.locator("#processes").waitFor({ timeout: 20000 });
    // The app's own requests carry it (a cookie for this browser session).
    const status = await page.evaluate(async () => (await fetch("/api/targets")).status);
    assert.equal(status, 200);
  } else {
    throw new Error("no scenario " + args.scenario);
  }
  assert.deepEqual(outside, [], "the page asked for something outside the dashboard");
  assert.deepEqual(consoleErrors, [], "the page threw");
  await finish(true);
  console.log("RESULT " + JSON.stringify(report));
} catch (e) {
  log("FAILED:", e.stack || e.message);
  try {
    log("page text:", (await page.locator("body").innerText()).slice(0, 3000));
  } catch (_) { /* the page is gone too */ }
  await finish(false);
  process.exit(1);
}
