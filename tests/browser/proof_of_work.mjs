// Proof of work in a real browser: at a room with `challenge = "pow"`, the
// waiting page finds the nonce by itself (its own SHA-256 in JavaScript),
// sends it with its poll, its place counts, and it gets in when a slot frees.
//
// usage: node proof_of_work.mjs BASE_URL   (a room "web" of capacity 1, challenge = "pow")
import { fail, launch } from "./chromium.mjs";

const base = process.argv[2];
const browser = await launch();
try {
  const inside = await (await browser.newContext()).newPage();
  await inside.goto(`${base}/shop/`);
  if (!(await inside.content()).includes("upstream saw /shop/")) fail("the first visitor should be let in");

  const page = await (await browser.newContext()).newPage();
  const solved = page.waitForRequest((r) => r.url().includes("/__anteroom/status") && r.headers()["x-anteroom-pow"],
                                     { timeout: 20000 });
  await page.goto(`${base}/shop/item`);
  const seed = await page.getAttribute("#room", "data-challenge");
  if (!seed) fail("the waiting page carries no challenge");
  const answer = await (await solved).response();
  const status = await answer.json();
  if (status.challenge) fail(`the page's solution was refused: ${JSON.stringify(status)}`);
  if (status.queueLength !== 1) fail(`the solved place does not count: ${JSON.stringify(status)}`);

  await inside.request.post(`${base}/__anteroom/leave`);
  await page.waitForFunction(() => document.body.innerText.includes("upstream saw /shop/item"), null, { timeout: 15000 });
  console.log("ok");
} finally {
  await browser.close();
}
