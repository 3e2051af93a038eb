// The browser half of host_tests/cpython/test_net_web_browser.py: what real headless Chromium shows of
// the gateway's web page, and a config change made through its form.
//   node host_tests/web/page_check.mjs URL PASSWORD
// Prints one JSON object (the test asserts on it): the values the page shows, read twice 3 s apart
// (it refreshes itself), the answers to a save with a wrong and with the right password, and the CCL
// the page shows afterwards. Exit 1 on a page error (a script error in the page) or a timeout.
import { edit, launch, ready } from "../../tools/web_screenshot.mjs";

const text = (page, sel) => page.locator(sel).first().textContent();

async function shown(page) {
  return {
    soc: await text(page, "#soc"),
    pack_v: await text(page, "#pack_v"),
    current: await text(page, "#current"),
    cells: await page.$$eval("#bars .bar", (bars) => bars.map((b) => Number(b.dataset.v))),
    min_bar: await page.$$eval("#bars .bar", (bars) => bars.findIndex((b) => b.classList.contains("min"))),
    max_bar: await page.$$eval("#bars .bar", (bars) => bars.findIndex((b) => b.classList.contains("max"))),
    scale: await page.$$eval("#chart .grid span", (s) => s.map((e) => e.textContent)),
    cellsum: await text(page, "#cellsum"),
    header: await text(page, "#dev"),
    age: await text(page, "#age"),
    limits: await text(page, "#limits"),
    links: await text(page, "#links"),
    events: await text(page, "#events"),
  };
}

async function save(page, password) {
  await page.fill("#pw", password);
  await page.evaluate(() => { document.getElementById("answer").textContent = ""; });
  await page.click("#save");
  await page.waitForFunction(() => /saved/.test(document.getElementById("answer").textContent), null,
    { timeout: 15000 });
  return text(page, "#answer");
}

async function main([url, password]) {
  const b = await launch();
  const out = {};
  try {
    const page = b.page;
    await page.goto(url, { waitUntil: "load", timeout: 30000 });
    await ready(page);
    out.first = await shown(page);
    await page.waitForTimeout(3000);
    out.later = await shown(page);
    out.inputs = await page.$$eval("#cfg [name]", (els) => els.map((e) => [e.name, e.tagName, e.type]));
    out.form = {
      max_charge_a: await page.inputValue("#cfg [name=max_charge_a]"),
      web_password: await page.inputValue("#cfg [name=web_password]"),
      protocol_options: await page.$$eval("#cfg [name=protocol] option", (o) => o.map((e) => e.textContent)),
      max_charge_a_range: [await page.getAttribute("#cfg [name=max_charge_a]", "min"),
        await page.getAttribute("#cfg [name=max_charge_a]", "max")],
    };
    await edit(page, "max_charge_a", "40");
    await edit(page, "can_period_ms", "500");
    out.wrong = await save(page, password + "x");
    await page.waitForTimeout(1200); // the gateway checks no password for 1 s after a wrong one
    out.right = await save(page, password);
    // the form is reloaded from /api/config after the save; the limits from the next refreshes
    await page.waitForFunction(() => /CCL40\.0 A/.test(document.getElementById("limits").textContent), null,
      { timeout: 15000 }).catch(() => {});
    await page.fill("#filter", "can_period");
    await page.dispatchEvent("#filter", "input");
    out.after = {
      limits: await text(page, "#limits"),
      max_charge_a: await page.inputValue("#cfg [name=max_charge_a]"),
      pending: await text(page, "#cfg tr[data-k=can_period_ms]"),
    };
    out.errors = b.errors;
  } finally {
    await b.close();
  }
  console.log(JSON.stringify(out));
  return b.errors.length ? 1 : 0;
}

main(process.argv.slice(2)).then((rc) => process.exit(rc), (e) => {
  console.error("page_check: " + (e && e.stack ? e.stack : e));
  process.exit(1);
});
