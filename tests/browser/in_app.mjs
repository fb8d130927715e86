// Waiting inside the app, with /__anteroom/client.js, against `anteroom
// demo`: the app's own page (/app, open to all) gates its chat button while
// the room "web" is full, shows the place in its own layout, and starts the
// chat by itself when a place frees.
//
// usage: node in_app.mjs BASE_URL   (the demo: room "web" of 2, /app bypassed)
import { fail, launch } from "./chromium.mjs";

const base = process.argv[2];
const browser = await launch();
try {
  // Two visitors take the room's two places.
  const inside = [];
  for (let i = 0; i < 2; i++) {
    const page = await (await browser.newContext()).newPage();
    await page.goto(`${base}/`);
    if (!(await page.content()).includes("You are in")) fail(`visitor ${i + 1} should be let in`);
    inside.push(page);
  }
  const app = await (await browser.newContext()).newPage();
  await app.goto(`${base}/app`);
  if ((await app.textContent("h1")).trim() !== "Choose your coach") fail("the app's page is open to all");
  await app.click("#chat");
  // The place shows inside the app's page; the chat has not started.
  await app.waitForFunction(() => document.getElementById("place").textContent.includes("number 1 in line"), null, { timeout: 10000 });
  if ((await app.textContent("#answer")).trim() !== "") fail("the chat started while the room was full");
  // A place frees: the chat starts by itself.
  await inside[0].request.post(`${base}/__anteroom/leave`);
  await app.waitForFunction(() => document.getElementById("answer").textContent.includes("What shall we train today?"), null, { timeout: 15000 });
  if ((await app.textContent("#place")).trim() !== "") fail("the place should be cleared once in");
  // Admitted, the next action goes straight through.
  const again = await app.evaluate(async () => (await Anteroom.fetch("/chat", { method: "POST" })).status);
  if (again !== 200) fail(`admitted, the next chat got ${again}`);
  console.log("ok");
} finally {
  await browser.close();
}
