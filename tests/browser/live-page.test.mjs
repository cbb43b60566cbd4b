// The live page (GET /) in a real browser: headless Debian Chromium driven by playwright-core.
//
//   node --test tests/browser/           (scripts/check-browser.sh installs what it needs first)
//
// Starts its own gateway in embedded mode (no Kafka needed) on a free port, opens the page and
// checks what a person would: the connection badge, placing an order with the form, an order
// placed by another client, validation errors next to their fields, the user filter. Saves
// screenshots to test-results/live-page.png and test-results/live-page-mobile.png.
//
// Environment:
//   GATEWAY_BIN      the gateway binary (default target/debug/orders-gateway)
//   CHROMIUM_BIN     the browser (default: `command -v chromium`)
//   TEST_PORTS       "FROM-TO": take the gateway's port from this range (default: any free port)

import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const RESULTS = path.join(ROOT, "test-results");
const PAGE_FILE = path.join(ROOT, "src/http/assets/index.html");
const GATEWAY_BIN = path.resolve(ROOT, process.env.GATEWAY_BIN || "target/debug/orders-gateway");
const WAIT = 10_000;
const DESKTOP = { width: 1280, height: 800 };
const MOBILE = { width: 390, height: 844 };

const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/** A unique suffix, so names never collide with orders of an earlier run or test. */
const tag = randomUUID().slice(0, 8);

let gateway; // { child, base, log }
let context;
let page;
const pageErrors = [];
const tmpDirs = [];

function chromiumPath() {
  if (process.env.CHROMIUM_BIN) return process.env.CHROMIUM_BIN;
  try {
    return execFileSync("sh", ["-c", "command -v chromium"], { encoding: "utf8" }).trim();
  } catch {
    throw new Error("chromium is not installed (apt-get install chromium, or run scripts/check-browser.sh)");
  }
}

/** A free loopback port: the system's choice, or the first free one in TEST_PORTS. */
async function freePort() {
  const range = process.env.TEST_PORTS;
  if (!range) {
    return new Promise((resolve, reject) => {
      const server = net.createServer();
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => {
        const { port } = server.address();
        server.close(() => resolve(port));
      });
    });
  }
  const [from, to] = range.split("-").map(Number);
  assert.ok(from > 0 && to >= from, `TEST_PORTS must be FROM-TO, got ${range}`);
  for (let port = from; port <= to; port++) {
    const free = await new Promise((resolve) => {
      const server = net.createServer();
      server.once("error", () => resolve(false));
      server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
    });
    if (free) return port;
  }
  throw new Error(`no free port in ${range}`);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function tail(file, lines = 30) {
  try {
    return fs.readFileSync(file, "utf8").split("\n").slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}

async function startGateway() {
  assert.ok(
    fs.existsSync(GATEWAY_BIN),
    `gateway binary ${GATEWAY_BIN} is missing: run \`cargo build\` or set GATEWAY_BIN`,
  );
  const port = await freePort();
  const log = path.join(RESULTS, "live-page-gateway.log");
  const out = fs.openSync(log, "w");
  const env = { ...process.env, LISTEN_ADDR: `127.0.0.1:${port}`, NO_COLOR: "1" };
  // Embedded mode: the gateway runs its own in-memory broker when no Kafka is named.
  delete env.KAFKA_BOOTSTRAP_SERVERS;
  delete env.KAFKA_CONFIG;
  const child = spawn(GATEWAY_BIN, [], { env, stdio: ["ignore", out, out] });
  fs.closeSync(out);
  let exited = null;
  child.once("exit", (code, signal) => (exited = { code, signal }));
  // Last resort when the test process ends without the after hook (a crash, a timeout).
  process.once("exit", () => exited || child.kill("SIGKILL"));
  const base = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 20_000;
  try {
    for (;;) {
      if (exited) {
        throw new Error(`gateway exited (${JSON.stringify(exited)}) before it was ready:\n${tail(log)}`);
      }
      try {
        const response = await fetch(`${base}/readyz`, { signal: AbortSignal.timeout(1000) });
        if (response.status === 200) break;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) throw new Error(`gateway not ready within 20 s:\n${tail(log)}`);
      await sleep(100);
    }
  } catch (error) {
    child.kill("SIGKILL");
    throw error;
  }
  return { child, base, log, exited: () => exited };
}

async function stopGateway() {
  if (!gateway || gateway.exited()) return;
  const { child } = gateway;
  const gone = new Promise((resolve) => child.once("exit", resolve));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
  await gone;
  clearTimeout(timer);
}

async function postOrder(order) {
  const response = await fetch(`${gateway.base}/orders`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(order),
    signal: AbortSignal.timeout(WAIT),
  });
  const body = await response.json();
  assert.equal(response.status, 202, `POST /orders answered ${response.status}: ${JSON.stringify(body)}`);
  return body;
}

async function openPage(viewport) {
  const p = await context.newPage();
  await p.setViewportSize(viewport);
  p.on("pageerror", (error) => pageErrors.push(String(error)));
  p.on("console", (message) => {
    // The browser logs every 4xx/5xx response; the tests cause a 422 and a 503 on purpose.
    const expected = /^Failed to load resource: the server responded with a status of (422|503)\b/;
    if (message.type() === "error" && !expected.test(message.text())) {
      pageErrors.push(`console: ${message.text()}`);
    }
  });
  const response = await p.goto(`${gateway.base}/`, { timeout: WAIT });
  assert.equal(response.status(), 200);
  assert.match(response.headers()["content-type"] ?? "", /^text\/html/);
  return p;
}

const row = (p, orderId) => p.locator(`#orders tr[data-order-id="${orderId}"]`);

describe("live page", { timeout: 120_000 }, () => {
  before(async () => {
    fs.mkdirSync(RESULTS, { recursive: true });
    gateway = await startGateway();
    // The page is compiled into the binary: make sure it is the one in the work tree.
    const served = await fetch(`${gateway.base}/`, { signal: AbortSignal.timeout(WAIT) });
    assert.equal(served.status, 200, "GET / must serve the live page");
    assert.ok(
      (await served.text()) === fs.readFileSync(PAGE_FILE, "utf8"),
      `${GATEWAY_BIN} serves another copy of src/http/assets/index.html: run \`cargo build\``,
    );
    const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "live-page-chromium-"));
    tmpDirs.push(userDataDir);
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: chromiumPath(),
      headless: true,
      args: CHROMIUM_ARGS,
      viewport: DESKTOP,
      timeout: 30_000,
    });
    context.setDefaultTimeout(WAIT);
    page = await openPage(DESKTOP);
  });

  after(async () => {
    await context?.close().catch(() => {});
    await stopGateway();
    for (const dir of tmpDirs) fs.rmSync(dir, { recursive: true, force: true });
  });

  it("loads with its title and a live connection badge", async () => {
    assert.equal(await page.locator("h1").textContent(), "Orders — live");
    await page.locator('#badge[data-state="live"]').waitFor();
    assert.equal((await page.locator("#badge").textContent()).trim(), "Live");
    await page.locator("#empty").waitFor();
  });

  it("shows an order placed with the form", async () => {
    const form = page.locator("#order-form");
    const user = `ada-${tag}`;
    await form.getByLabel("User").fill(user);
    await form.getByLabel("Item").fill("earl grey");
    await form.getByLabel("Quantity").fill("3");
    await form.getByRole("button", { name: "Place order" }).click();
    await page.locator("#form-success").waitFor();
    assert.match(await page.locator("#form-success").textContent(), /accepted/i);

    const placed = page.locator("#orders tr", { hasText: user });
    await placed.waitFor();
    assert.equal(await placed.count(), 1);
    assert.equal(await placed.locator("td.item").textContent(), "earl grey");
    assert.equal(await placed.locator("td.num").textContent(), "3");
    assert.match(await placed.locator("td.pos").textContent(), /^\d+ \/ \d+$/);
    assert.match(await placed.locator("td.time").textContent(), /\d{1,2}:\d{2}:\d{2}/);
    assert.equal(await page.locator("#empty").isVisible(), false);
  });

  it("shows an order another client placed over plain HTTP, as text", async () => {
    const placed = await postOrder({
      order_id: randomUUID(),
      user: `<img src=x onerror="window.__xss=1">-${tag}`,
      item: `<b>scones</b> & "jam"`,
      quantity: 12,
    });
    const r = row(page, placed.order_id);
    await r.waitFor();
    assert.equal(await r.locator("td.user").textContent(), placed.user);
    assert.equal(await r.locator("td.item").textContent(), placed.item);
    assert.equal(await r.locator("td.num").textContent(), "12");
    assert.equal(await r.locator("td.pos").textContent(), `${placed.partition} / ${placed.offset}`);
    assert.equal(await r.locator("img, b").count(), 0, "order text must not become markup");
    assert.equal(await page.evaluate(() => window.__xss), undefined);
    // Newest first.
    assert.equal(await page.locator("#orders tr").first().getAttribute("data-order-id"), placed.order_id);
  });

  it("shows validation errors next to the fields they are about", async () => {
    const form = page.locator("#order-form");
    await form.getByLabel("User").fill("");
    await form.getByLabel("Item").fill("crumpets");
    await form.getByLabel("Quantity").fill("0");
    await form.getByRole("button", { name: "Place order" }).click();

    for (const name of ["user", "quantity"]) {
      const field = form.locator(".field", { has: page.locator(`#order-${name}`) });
      const error = field.locator(".field-error");
      await error.waitFor();
      assert.notEqual((await error.textContent()).trim(), "", `no error shown for ${name}`);
      assert.equal(await page.locator(`#order-${name}`).getAttribute("aria-invalid"), "true");
    }
    assert.match(await page.locator("#order-user-error").textContent(), /empty/i);
    assert.match(await page.locator("#order-quantity-error").textContent(), /1 to/);
    assert.equal(await page.locator("#order-item-error").isVisible(), false);
    assert.equal(await page.locator("#order-item").getAttribute("aria-invalid"), null);
    assert.equal(await page.locator("#form-error").isVisible(), false);
    assert.equal(await page.locator("#orders tr", { hasText: "crumpets" }).count(), 0);
  });

  it("resends a failed order with the same Idempotency-Key, a new order with a new one", async () => {
    const keys = [];
    let failNext = true;
    await page.route("**/orders", async (route) => {
      keys.push(route.request().headers()["idempotency-key"]);
      if (failNext) {
        failNext = false;
        await route.fulfill({
          status: 503,
          headers: { "content-type": "application/problem+json" },
          body: JSON.stringify({ type: "/problems/broker-unavailable", title: "x", status: 503, detail: "try again" }),
        });
      } else {
        await route.continue();
      }
    });
    try {
      const form = page.locator("#order-form");
      const user = `grace-${tag}`;
      await form.getByLabel("User").fill(user);
      await form.getByLabel("Item").fill("oolong");
      await form.getByLabel("Quantity").fill("2");
      await form.getByRole("button", { name: "Place order" }).click();
      await page.locator("#form-error").waitFor();
      await form.getByRole("button", { name: "Place order" }).click();
      await page.locator("#form-success").waitFor();
      await form.getByLabel("Item").fill("sencha");
      await form.getByRole("button", { name: "Place order" }).click();
      await page.locator("#orders tr", { hasText: "sencha" }).waitFor();
    } finally {
      await page.unroute("**/orders");
    }
    assert.equal(keys.length, 3);
    assert.match(keys[0], /^[0-9a-f]{32}$/);
    assert.equal(keys[1], keys[0], "the retry of the same order reuses its key");
    assert.notEqual(keys[2], keys[0], "a new order gets a new key");
  });

  it("shows a general error line for a problem that is not about a field", async () => {
    // A broker outage cannot be had on demand from the embedded broker: answer like the
    // gateway does then.
    await page.route("**/orders", (route) =>
      route.fulfill({
        status: 503,
        headers: { "content-type": "application/problem+json", "retry-after": "1" },
        body: JSON.stringify({
          type: "/problems/broker-unavailable",
          title: "Broker unavailable",
          status: 503,
          detail: "the order could not be written to Kafka in time",
        }),
      }),
    );
    try {
      const form = page.locator("#order-form");
      await form.getByLabel("User").fill(`ada-${tag}`);
      await form.getByLabel("Quantity").fill("1");
      await form.getByRole("button", { name: "Place order" }).click();
      const error = page.locator("#form-error");
      await error.waitFor();
      assert.match(await error.textContent(), /could not be written to Kafka in time/);
      assert.equal(await page.locator("#order-user-error").isVisible(), false);
    } finally {
      await page.unroute("**/orders");
    }
  });

  it("filters on user: shows the matching order and hides another user's", async () => {
    const carol = `carol-${tag}`;
    const dave = `dave-${tag}`;
    const earlier = page.locator("#orders tr", { hasText: `ada-${tag}` });
    assert.equal(await earlier.isVisible(), true);

    const filters = page.getByRole("search");
    await filters.getByLabel("User").fill(carol);
    const reconnected = page.waitForResponse(
      (r) => r.url().includes("/orders/stream") && new URL(r.url()).searchParams.get("user") === carol,
    );
    await filters.getByRole("button", { name: "Apply filter" }).click();
    const stream = await reconnected;
    assert.equal(stream.status(), 200);
    await page.locator('#badge[data-state="live"]').waitFor();
    assert.equal(await earlier.isVisible(), false, "an order of another user still shows");

    const other = await postOrder({ user: dave, item: "muffin", quantity: 1 });
    const match = await postOrder({ user: carol, item: "muffin", quantity: 2 });
    await row(page, match.order_id).waitFor();
    // Orders of different partitions may arrive in either order: give the other one time.
    await sleep(1500);
    assert.equal(await row(page, other.order_id).isVisible(), false, "the other user's order is shown");
    assert.equal(
      await row(page, other.order_id).count(),
      0,
      "the server streamed an order of another user despite ?user= (the page hid it, the server did not filter)",
    );
    assert.equal(new URL(page.url()).searchParams.get("user"), carol, "the filter is not kept in the address");

    await page.locator("#filter-clear").click();
    await page.locator('#badge[data-state="live"]').waitFor();
    await earlier.waitFor();
    assert.equal(await row(page, match.order_id).isVisible(), true);
  });

  it("looks right at 1280x800 and on a phone (screenshots)", async () => {
    await postOrder({ user: `grace-${tag}`, item: "oat flat white", quantity: 2 });
    const form = page.locator("#order-form");
    await form.getByLabel("User").fill(`linus-${tag}`);
    await form.getByLabel("Item").fill("croissant");
    await form.getByLabel("Quantity").fill("4");
    await form.getByRole("button", { name: "Place order" }).click();
    await page.locator("#form-success").waitFor();
    assert.equal(await page.locator("#form-error").isVisible(), false, "an old error line is still shown");
    await page.locator("#orders tr", { hasText: `linus-${tag}` }).waitFor();
    await page.screenshot({ path: path.join(RESULTS, "live-page.png") });

    const phone = await openPage(MOBILE);
    await phone.locator('#badge[data-state="live"]').waitFor();
    await postOrder({ user: `margaret-${tag}`, item: "a rather long item name: cinnamon roll", quantity: 1 });
    await postOrder({ user: `barbara-${tag}`, item: "espresso", quantity: 2 });
    await phone.locator("#orders tr", { hasText: `barbara-${tag}` }).waitFor();
    await phone.locator("#orders tr", { hasText: `margaret-${tag}` }).waitFor();
    const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `the page is ${overflow}px wider than a phone screen`);
    await phone.screenshot({ path: path.join(RESULTS, "live-page-mobile.png"), fullPage: true });
    await phone.close();
  });

  it("raised no script errors", () => {
    assert.deepEqual(pageErrors, []);
  });
});
