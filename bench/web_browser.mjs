// Chromium (Debian's, headless, driven by playwright-core from build/test-assets) for
// bench/web_dashboard.py. Two modes:
//   paint --url U --runs N   each run in a new browser context (nothing cached): the page's
//                            first contentful paint and the moment every section has drawn
//                            its first data (the app's "probing:ready" mark), from the start of
//                            navigation, and the JavaScript it loaded (bytes on the wire,
//                            gzip, and unpacked); one JSON line per run
//   hold --url U             reads commands from stdin: "open" opens the page (it refreshes
//                            itself every second), "close" closes it; answers each with a line
// Requests to anywhere but the dashboard are refused.
import { createRequire } from "node:module";
import readline from "node:readline";

const { chromium } = createRequire(import.meta.url)("playwright-core");
const mode = process.argv[2];
const args = {};
for (let i = 3; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, "")] = process.argv[i + 1];
const base = new URL(args.url);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});

async function newContext() {
  const context = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
  await context.route("**/*", (route) =>
    new URL(route.request().url()).origin === base.origin ? route.continue() : route.abort());
  return context;
}

if (mode === "paint") {
  for (let i = 0; i < Number(args.runs || 5); i++) {
    const context = await newContext();
    const page = await context.newPage();
    await page.goto(args.url);
    await page.locator("body[data-ready='1']").waitFor({ timeout: 60000 });
    const m = await page.evaluate(() => {
      const paint = performance.getEntriesByName("first-contentful-paint")[0];
      const ready = performance.getEntriesByName("probing:ready")[0];
      const js = performance.getEntriesByType("resource").filter((r) => r.name.endsWith(".js"));
      return {
        fcp_ms: paint ? paint.startTime : null,
        ready_ms: ready ? ready.startTime : null,
        js_files: js.length,
        js_wire_bytes: js.reduce((a, r) => a + r.encodedBodySize, 0),
        js_bytes: js.reduce((a, r) => a + r.decodedBodySize, 0),
        samples: Number((document.querySelector("#flame-sub") || {}).textContent?.split(" ")[0].replace(/,/g, "")) || null,
      };
    });
    console.log(JSON.stringify(m));
    await context.close();
  }
  await browser.close();
} else if (mode === "hold") {
  const context = await newContext();
  let page = null;
  const rl = readline.createInterface({ input: process.stdin });
  console.log("started");
  for await (const line of rl) {
    if (line === "open" && !page) {
      page = await context.newPage();
      await page.goto(args.url);
      await page.locator("body[data-ready='1']").waitFor({ timeout: 60000 });
      console.log("opened");
    } else if (line === "close" && page) {
      await page.close();
      page = null;
      console.log("closed");
    } else if (line === "quit") {
      break;
    }
  }
  rl.close();
  await browser.close();
  process.exit(0);
} else {
  console.error("usage: web_browser.mjs paint|hold --url URL [--runs N]");
  process.exit(2);
}
