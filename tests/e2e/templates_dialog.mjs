// The Templates browser as a user opens it: Templates → the pack's category. Reads {cdp, server} as JSON on stdin,
// attaches to the test session's Chromium (tests/e2e/browser.py), and prints one line of JSON: each card's title,
// description and picture as displayed, and every template file request with its HTTP status.
// tests/e2e/test_templates.py holds the assertions.

import { chromium } from "playwright-core";

const PACK = "comfyui-negative-guidance";

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString("utf8"));
}

const request = await readStdin();
const browser = await chromium.connectOverCDP(request.cdp);
const context = await browser.newContext({ viewport: { width: 1600, height: 1000 } });
try {
  const page = await context.newPage();
  const fileRequests = [];
  page.on("response", (response) => {
    const url = decodeURIComponent(response.url());
    if (url.includes(`/workflow_templates/${PACK}/`)) fileRequests.push({ url, status: response.status() });
  });
  await page.goto(request.server, { waitUntil: "domcontentloaded" });
  await page.waitForFunction(() => window.app?.graph && window.app?.extensionManager?.command, null,
    { timeout: 120000 });
  await page.evaluate(() => window.app.extensionManager.command.execute("Comfy.BrowseTemplates"));
  await page.getByText(PACK, { exact: true }).first().click({ timeout: 30000 });
  const cards = page.locator("[data-testid^='template-workflow-']");
  await cards.first().waitFor({ timeout: 30000 });
  // Pictures load lazily; give them time to arrive (or to fail over to the frontend's placeholder).
  await page.waitForFunction(() => [...document.querySelectorAll("[data-testid^='template-workflow-'] img")]
    .every((image) => image.complete), null, { timeout: 30000 }).catch(() => {});
  await page.waitForTimeout(500);
  const shown = await page.evaluate(() => [...document.querySelectorAll("[data-testid^='template-workflow-']")]
    .map((card) => ({
      name: card.dataset.testid.replace("template-workflow-", ""),
      title: card.querySelector("h3")?.innerText ?? "",
      titleCut: ((title) => !!title && (title.scrollWidth > title.clientWidth || title.scrollHeight > title.clientHeight))(
        card.querySelector("h3")),
      description: card.querySelector("p")?.innerText ?? "",
      pictures: [...card.querySelectorAll("img")].map((image) => ({
        src: decodeURIComponent(image.src), width: image.complete ? image.naturalWidth : 0 })),
    })));
  process.stdout.write(JSON.stringify({ cards: shown, fileRequests }) + "\n");
} finally {
  await context.close();
  await browser.close();
}
process.exit(0);
