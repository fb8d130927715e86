// The waiting page on a phone (360×740) and a desktop (1280×800), in two
// languages and both colour schemes: nothing scrolls sideways, the card is
// set off from the page, axe-core finds no violation, the progress bar is not
// full while the visitor still waits. Screenshots are kept as artefacts.
//
// usage: node layout.mjs BASE_URL OUT_DIR   (a room "web" of capacity 1)
import { fail, launch } from "./chromium.mjs";
import { createRequire } from "node:module";
import { mkdirSync } from "node:fs";

const require = createRequire(import.meta.url);
const axePath = require.resolve("axe-core/axe.min.js");
const [base, out] = process.argv.slice(2);
mkdirSync(out, { recursive: true });
const browser = await launch();
try {
  // Someone inside, so that every page below waits in line.
  const inside = await (await browser.newContext()).newPage();
  await inside.goto(`${base}/`);

  const headings = { "en-US": "You are in line", "fr-FR": "Vous êtes dans la file" };
  for (const [locale, heading] of Object.entries(headings)) {
    for (const [name, viewport] of [["phone", { width: 360, height: 740 }], ["desktop", { width: 1280, height: 800 }]]) {
      for (const scheme of ["light", "dark"]) {
        const context = await browser.newContext({ locale, viewport, colorScheme: scheme, isMobile: name === "phone" });
        const page = await context.newPage();
        await page.goto(`${base}/shop/`);
        const where = `${locale} ${name} ${scheme}`;
        if ((await page.textContent("h1")).trim() !== heading) fail(`${where}: heading ${await page.textContent("h1")}`);
        const layout = await page.evaluate(() => {
          const card = document.querySelector("main").getBoundingClientRect();
          const colour = (el) => getComputedStyle(el).backgroundColor;
          return {
            scroll: document.documentElement.scrollWidth,
            width: document.documentElement.clientWidth,
            left: card.left,
            right: card.right,
            page: colour(document.body),
            card: colour(document.querySelector("main")),
            progress: Number(document.querySelector("[role=progressbar]").getAttribute("aria-valuenow")),
          };
        });
        if (layout.scroll > layout.width) fail(`${where}: scrolls sideways (${layout.scroll} > ${layout.width})`);
        if (layout.left < 0 || layout.right > layout.width) fail(`${where}: the card is cut off (${layout.left}..${layout.right})`);
        if (layout.page === layout.card) fail(`${where}: the card cannot be told from the page (${layout.card})`);
        if (layout.progress >= 100) fail(`${where}: progress ${layout.progress}% while in line`);
        await page.addScriptTag({ path: axePath });
        const violations = await page.evaluate(async () => (await window.axe.run(document)).violations);
        if (violations.length) {
          fail(`${where}: axe: ${violations.map((v) => `${v.id} (${v.impact}): ${v.nodes.map((n) => n.target).join(", ")}`).join("; ")}`);
        }
        await page.screenshot({ path: `${out}/waiting-${locale}-${name}-${scheme}.png`, fullPage: true });
        await context.close();
      }
    }
  }
  // The narrowest phone still fits.
  const narrow = await (await browser.newContext({ viewport: { width: 320, height: 640 }, locale: "de-DE" })).newPage();
  await narrow.goto(`${base}/shop/`);
  const fits = await narrow.evaluate(() => document.documentElement.scrollWidth <= document.documentElement.clientWidth);
  if (!fits) fail("320 px: scrolls sideways");
  console.log("ok");
} finally {
  await browser.close();
}
