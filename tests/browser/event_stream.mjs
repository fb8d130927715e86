// The waiting page hears its turn through the event stream: with polls only
// every 10 s, a page whose slot frees goes on by itself within seconds, and
// its stream was open while it waited.
//
// usage: node event_stream.mjs BASE_URL   (a room "web" of capacity 1, poll_interval 10s)
import { fail, launch } from "./chromium.mjs";

const base = process.argv[2];
const browser = await launch();
try {
  const inside = await (await browser.newContext()).newPage();
  await inside.goto(`${base}/shop/`);
  if (!(await inside.content()).includes("upstream saw /shop/")) fail("the first visitor should be let in");

  const waiting = await (await browser.newContext()).newPage();
  const streamed = waiting.waitForRequest((r) => r.url().includes("/__anteroom/events"), { timeout: 10000 });
  await waiting.goto(`${base}/shop/item`);
  if ((await waiting.textContent("#position")).trim() !== "1") fail("first in line expected");
  // The first poll (within a second) opens the stream.
  await streamed;
  await new Promise((r) => setTimeout(r, 500));

  // The slot frees: the turn is pushed, long before the next poll would come.
  const freed = Date.now();
  await inside.request.post(`${base}/__anteroom/leave`);
  await waiting.waitForFunction(() => document.body.innerText.includes("upstream saw /shop/item"), null, { timeout: 5000 })
    .catch(() => fail("the page did not go on within 5 s of the slot freeing (polls come every 10 s)"));
  console.log(`in ${Date.now() - freed} ms after the slot freed`);
  console.log("ok");
} finally {
  await browser.close();
}
