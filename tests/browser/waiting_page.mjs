// The waiting page in a real browser: a browser let in on arrival confirms
// its place by itself; a waiting one sees its place, polls by itself and
// continues to the page first asked for once admitted; without JavaScript it
// reloads itself (meta refresh) and gets in the same way; a browser that
// keeps no cookies is told so instead of reloading for ever.
//
// usage: node waiting_page.mjs BASE_URL   (a room "web" of capacity 1, fast polling)
import { fail, launch } from "./chromium.mjs";

const base = process.argv[2];
const browser = await launch();
try {
  // Let in on arrival, the browser confirms its place by itself (Link preload).
  const inside = await (await browser.newContext()).newPage();
  const confirmed = inside.waitForResponse((r) => r.url().includes("/__anteroom/confirm"), { timeout: 10000 });
  await inside.goto(`${base}/shop/`);
  if (!(await inside.content()).includes("upstream saw /shop/")) fail("the first visitor should be let in");
  if ((await confirmed).status() !== 204) fail("the confirm preload did not succeed");

  const js = await (await browser.newContext({ locale: "de-DE" })).newPage();
  await js.goto(`${base}/shop/item?id=7`);
  if ((await js.textContent("h1")).trim() !== "Sie sind in der Warteschlange") fail("German waiting page expected");
  if ((await js.textContent("#position")).trim() !== "1") fail("first in line expected");
  // Its first poll makes its ticket count.
  await js.waitForResponse((r) => r.url().includes("/__anteroom/status"), { timeout: 10000 });

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
  // A browser that keeps no cookies is told so, and does not go round in circles.
  // (The browser never gets a cookie: Set-Cookie is dropped from every answer.)
  const strip = async (context) => {
    await context.route("**/*", async (route) => {
      const response = await route.fetch({ maxRedirects: 0 });
      await context.clearCookies();
      const headers = { ...response.headers() };
      delete headers["set-cookie"];
      await route.fulfill({ response, headers });
    });
    return context.newPage();
  };
  const nocookies = await strip(await browser.newContext({ javaScriptEnabled: false }));
  let loads = 0;
  nocookies.on("load", () => { loads += 1; });
  await nocookies.goto(`${base}/shop/x`);
  const told = Date.now() + 15000;
  const heading = (page) => page.textContent("h1").then((t) => t.trim()).catch(() => "");
  while ((await heading(nocookies)) !== "Cookies are needed") {
    if (Date.now() > told) fail("a browser without cookies was never told: " + nocookies.url() + " " + (await heading(nocookies)));
    await new Promise((r) => setTimeout(r, 200));
  }
  await nocookies.waitForLoadState("load");
  const settled = loads;
  await new Promise((r) => setTimeout(r, 2000));
  if (loads !== settled) fail(`the page without cookies kept reloading (${loads} loads)`);
  const jsContext = await browser.newContext();
  await jsContext.addInitScript(() => Object.defineProperty(navigator, "cookieEnabled", { get: () => false }));
  const jsNoCookies = await strip(jsContext);
  await jsNoCookies.goto(`${base}/shop/y`);
  await jsNoCookies.waitForFunction(() => document.querySelector("h1").textContent === "Cookies are needed", null, { timeout: 15000 });
  console.log("ok");
} finally {
  await browser.close();
}
