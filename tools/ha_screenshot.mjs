// The browser half of tools/ha_screenshot.py (run by it; see its --help):
//   node tools/ha_screenshot.mjs URL SESSION_JSON OUT.png WIDTH HEIGHT DEVICE_NAME
// Opens Home Assistant's device page URL in headless Chromium (/usr/bin/chromium through playwright-core,
// a fresh profile), logged in by the tokens in SESSION_JSON (what the frontend keeps in localStorage
// "hassTokens" after a login), waits until the page shows DEVICE_NAME and no entity row is still
// "Unknown" / "Unavailable", and writes the screenshot (HEIGHT 0: as tall as the page's content).

// the one headless Chromium of the project's browser work (a fresh profile, only this machine reachable)
import { launch } from "./web_screenshot.mjs";

const [url, sessionJson, out, width, height, deviceName] = process.argv.slice(2);
if (!deviceName) {
  console.error("usage: node tools/ha_screenshot.mjs URL SESSION_JSON OUT.png WIDTH HEIGHT DEVICE_NAME");
  process.exit(2);
}
const { ctx, page, errors, close } = await launch({ width: Number(width), height: Number(height) || 1000 });
try {
  // The frontend reads its tokens before anything else: put them there before its scripts run.
  await ctx.addInitScript((s) => { window.localStorage.setItem("hassTokens", s); }, sessionJson);
  // the page may load from Home Assistant only (the brand icons it would fetch from outside stay blank)
  const origin = new URL(url).origin;
  await ctx.route((u) => u.origin !== origin && u.protocol !== "data:" && u.protocol !== "blob:",
    (route) => route.abort());
  await page.goto(url, { waitUntil: "load", timeout: 60000 });
  // Playwright's CSS and text locators pierce the frontend's (open) shadow roots.
  await page.locator("ha-config-device-page").first().waitFor({ timeout: 60000 });
  await page.getByText(deviceName, { exact: true }).first().waitFor({ timeout: 60000 });
  // the entity rows drawn, none of them still without a value
  const t0 = Date.now();
  for (;;) {
    const rows = await page.locator("ha-config-device-page hui-generic-entity-row").count();
    const bad = await page.getByText(/^(Unknown|Unavailable)$/).count();
    if (rows > 0 && bad === 0) break;
    if (Date.now() - t0 > 60000) throw new Error("rows " + rows + ", still without a value " + bad);
    await page.waitForTimeout(500);
  }
  // HEIGHT 0: as tall as the page's content, so that every entity is in the picture (the frontend scrolls
  // inside its own containers, a full-page screenshot would not see them)
  if (Number(height) === 0) {
    for (let i = 0; i < 3; i++) {
      const need = await page.evaluate(() => {
        let max = document.documentElement.scrollHeight;
        const walk = (root) => {
          for (const el of root.querySelectorAll("*")) {
            if (el.scrollHeight > el.clientHeight + 1 && /auto|scroll/.test(getComputedStyle(el).overflowY)) {
              max = Math.max(max, el.scrollHeight + el.getBoundingClientRect().top);
            }
            if (el.shadowRoot) walk(el.shadowRoot);
          }
        };
        walk(document);
        return Math.ceil(max);
      });
      const h = Math.min(Math.max(need, 600), 4000);
      if (h === page.viewportSize().height) break;
      await page.setViewportSize({ width: Number(width), height: h });
      await page.waitForTimeout(500);
    }
  }
  await page.waitForTimeout(2000); // the last state changes, the icons' fade-in
  await page.screenshot({ path: out, fullPage: false });
} finally {
  for (const e of errors) console.error("page error:", e);
  await close();
}
