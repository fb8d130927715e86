// The waiting page in a real browser: it shows the place, polls by itself and
// continues to the page first asked for once admitted; without JavaScript it
// reloads itself (meta refresh) and gets in the same way.
//
// usage: node waiting_page.mjs BASE_URL   (a room "web" of capacity 1, fast polling)
import { chromium } from "playwright-core";

const base = process.argv[2];
const fail = (msg) => { console.error(msg); process.exit(1); };
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const inside = await (await browser.newContext()).newPage();
  await inside.goto(`${base}/shop/`);
  if (!(await inside.content()).includes("upstream saw /shop/")) fail("the first visitor should be let in");

  const js = await (await browser.newContext({ locale: "de-DE" })).newPage();
  await js.goto(`${base}/shop/item?id=7`);
  if ((await js.textContent("h1")).trim() !== "Sie sind in der Warteschlange") fail("German waiting page expected");
  if ((await js.textContent("#position")).trim() !== "1") fail("first in line expected");

  const nojs = await (await browser.newContext({ javaScriptEnabled: false })).newPage();
  await nojs.goto(`${base}/shop/other`);
  if ((await nojs.textContent("#position")).trim() !== "2") fail("second in line expected");

  // A slot frees: the page with JavaScript goes on by itself to the URL it asked for.
  await inside.request.post(`${base}/__anteroom/leave`);
  await js.waitForFunction(() => document.body.innerText.includes("upstream saw /shop/item"), null, { timeout: 15000 });
  if (!js.url().endsWith("/shop/item?id=7")) fail(`continued to the wrong page: ${js.url()}`);

  // Another slot frees: the page without JavaScript reloads itself and gets in.
  await js.request.post(`${base}/__anteroom/leave`);
  const deadline = Date.now() + 15000;
  while (!(await nojs.content().catch(() => "")).includes("upstream saw /shop/other")) {
    if (Date.now() > deadline) fail("the page without JavaScript never got in");
    await new Promise((r) => setTimeout(r, 200));
  }
  console.log("ok");
} finally {
  await browser.close();
}
