// The browser half of tools/web_screenshot.py (run by it; see its --help), and the browser the web
// page's test and tools/ha_screenshot.mjs drive (both import launch()):
//   node tools/web_screenshot.mjs URL PASSWORD STATUS.png CONFIG.png
// Opens the gateway's web page in headless Chromium (/usr/bin/chromium, JKGW_CHROMIUM overrides, through
// playwright-core, a fresh profile), waits until it shows the pack's values, writes the status part;
// then changes max_charge_a in the config form, saves it with PASSWORD and writes the config part with
// the gateway's answer.
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

// A fresh profile per run; nothing but this machine is reachable (no sign-in or update checks).
export async function launch(viewport = { width: 1000, height: 1400 }) {
  const profile = mkdtempSync(join(tmpdir(), "jkgw-web-"));
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.JKGW_CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"],
    viewport,
    deviceScaleFactor: 1,
    locale: "en-US",
    colorScheme: "light",
  });
  const page = ctx.pages()[0] || (await ctx.newPage());
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  const close = async () => {
    await ctx.close();
    rmSync(profile, { recursive: true, force: true });
  };
  return { ctx, page, errors, close };
}

// The page has drawn the first /api/status answer and the config form.
export async function ready(page) {
  await page.waitForFunction(() => document.querySelectorAll("#bars .bar").length > 0 &&
    document.querySelectorAll("#cfg [name]").length > 0, null, { timeout: 30000 });
}

// Type value into the form's input for key (the filter shows just that row meanwhile).
export async function edit(page, key, value) {
  await page.fill("#filter", key);
  await page.dispatchEvent("#filter", "input");
  await page.fill("#cfg [name=" + key + "]", value);
  await page.dispatchEvent("#cfg [name=" + key + "]", "input");
}

async function main(argv) {
  const [url, password, statusPng, configPng] = argv;
  if (!configPng) {
    console.error("usage: node tools/web_screenshot.mjs URL PASSWORD STATUS.png CONFIG.png");
    return 2;
  }
  const b = await launch();
  try {
    await b.page.goto(url, { waitUntil: "load", timeout: 30000 });
    await ready(b.page);
    await b.page.waitForTimeout(2500); // one refresh more: the age reads "0 s ago"
    const top = await b.page.locator("#cfgsec").boundingBox();
    await b.page.screenshot({ path: statusPng, clip: { x: 0, y: 0, width: 1000, height: Math.ceil(top.y) } });
    // a change through the form: a charge key (in force at once) and one that waits for a reboot
    const v = Number(await b.page.inputValue("#cfg [name=max_charge_a]"));
    await edit(b.page, "max_charge_a", String(v === 80 ? 90 : 80));
    await edit(b.page, "can_period_ms", "500");
    await b.page.fill("#pw", password);
    await b.page.click("#save");
    await b.page.waitForFunction(() => /saved/.test(document.getElementById("answer").textContent), null,
      { timeout: 15000 });
    // the rows the README shows: one of each kind (number, choice, text, secret), the pending one
    await b.page.fill("#filter", "max_charge_a can_period protocol chemistry wifi_ web_");
    await b.page.dispatchEvent("#filter", "input");
    await b.page.waitForTimeout(300);
    const box = await b.page.locator("#cfgsec").boundingBox();
    await b.page.screenshot({ path: configPng, fullPage: true, clip: { x: 0, y: Math.floor(box.y) - 8, width: 1000,
      height: Math.ceil(box.height) + 16 } });
    if (b.errors.length) {
      console.error("page errors: " + b.errors.join("; "));
      return 1;
    }
    return 0;
  } finally {
    await b.close();
  }
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).then((rc) => process.exit(rc), (e) => {
    console.error("web_screenshot: " + (e && e.stack ? e.stack : e));
    process.exit(1);
  });
}
