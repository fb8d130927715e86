// The headless Chromium every browser test drives (the system's, installed
// by scripts/setup), and how a test gives up.
import { chromium } from "playwright-core";

export const fail = (msg) => { console.error(msg); process.exit(1); };

export const launch = () => chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
