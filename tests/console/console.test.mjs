// The web console in a real browser: Debian's chromium, driven by
// playwright-core, against a lab of real processes (TLS, WAN emulation).
//
// It opens /console on a control-plane member that is not necessarily the
// leader, with the lab's admin client certificate, and checks that the page
// shows the lab's three regions with their jurisdictions and health, every
// shard member with its Raft role, a replicated namespace with its standby's
// position; that a failover shows within a few seconds (new primary, a row
// in the history); that a region whose processes are killed turns "down";
// and that a browser without a client certificate is refused. Screenshots
// are kept in target/console/.
//
//   node tests/console/console.test.mjs   (scripts/test-console.sh sets it up)

import { chromium } from "playwright-core";
import { execFileSync } from "node:child_process";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), "../..");
const meridian = process.env.MERIDIAN_BIN || path.join(root, "target/debug/meridian");
const labDir = path.join(root, "target/console-lab");
const outDir = path.join(root, "target/console");
const chromiumPath = process.env.CHROMIUM || "/usr/bin/chromium";
const namespace = "console-orders";

function cli(...args) {
  const out = execFileSync(meridian, [...args, "--output", "json"], { encoding: "utf8" });
  return JSON.parse(out);
}

function log(message) {
  process.stderr.write(`console test: ${message}\n`);
}

/** Polls `check` (returning true when satisfied) until `seconds` pass. */
async function eventually(what, seconds, check) {
  const deadline = Date.now() + seconds * 1000;
  let last;
  for (;;) {
    try {
      if (await check()) return;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`${what}: not within ${seconds} s${last ? ` (last error: ${last.message})` : ""}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

function assertPng(file) {
  const bytes = fs.readFileSync(file);
  assert.deepEqual([...bytes.subarray(1, 4)], [0x50, 0x4e, 0x47], `${file} is a PNG`);
  const width = bytes.readUInt32BE(16);
  const height = bytes.readUInt32BE(20);
  assert.ok(width >= 1000 && height >= 600, `${file}: ${width}x${height}`);
  assert.ok(bytes.length > 20_000, `${file} holds a drawn page (${bytes.length} bytes)`);
}

async function main() {
  fs.rmSync(labDir, { recursive: true, force: true });
  fs.mkdirSync(outDir, { recursive: true });
  log("starting a lab (3 regions, TLS, WAN)");
  cli("lab", "up", "--dir", labDir, "--detach");
  let browser;
  try {
    cli("namespace", "create", namespace, "--region", "us-east", "--mode", "active-passive",
      "--standby", "eu-west", "--jurisdiction", "US", "--jurisdiction", "EU", "--lab", labDir);
    cli("kv", "put", namespace, "greeting", "hello", "--lab", labDir);

    const state = JSON.parse(fs.readFileSync(path.join(labDir, "lab.json"), "utf8"));
    // control-2 runs in eu-west: a member that survives the ap-south kill
    // below, leader or not (followers ask the leader).
    const member = state.processes.find((p) => p.name === "control-2");
    const origin = `https://${member.http}`;
    const certs = path.join(labDir, "certs");

    browser = await chromium.launch({
      executablePath: chromiumPath,
      args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    });

    // Without a client certificate: refused.
    const anonymous = await browser.newContext({ ignoreHTTPSErrors: true });
    const refused = await (await anonymous.newPage()).goto(`${origin}/console`);
    assert.equal(refused.status(), 401, "no certificate: 401");
    await anonymous.close();

    const context = await browser.newContext({
      // The lab's own CA is not the browser's; the client certificate is
      // what the server checks.
      ignoreHTTPSErrors: true,
      clientCertificates: [{ origin, certPath: path.join(certs, "admin.pem"), keyPath: path.join(certs, "admin.key") }],
      viewport: { width: 1400, height: 1100 },
    });
    const page = await context.newPage();
    const pageErrors = [];
    page.on("pageerror", (e) => pageErrors.push(e.message));
    const opened = await page.goto(`${origin}/console`);
    assert.equal(opened.status(), 200);
    assert.equal(await page.title(), "Meridian console");

    log("waiting for the lab's three regions");
    await eventually("three healthy regions", 20, async () => {
      const regions = await page.$$eval("[data-testid=region]", (cards) =>
        cards.map((c) => ({ name: c.dataset.region, health: c.dataset.health, text: c.textContent })));
      return regions.length === 3 && regions.every((r) => r.health === "healthy");
    });
    const regions = await page.$$eval("[data-testid=region]", (cards) =>
      cards.map((c) => ({ name: c.dataset.region, text: c.textContent })));
    assert.deepEqual(regions.map((r) => r.name).sort(), ["ap-south", "eu-west", "us-east"]);
    assert.match(regions.find((r) => r.name === "us-east").text, /jurisdictions: US/);
    assert.match(regions.find((r) => r.name === "eu-west").text, /jurisdictions: EU/);

    const roles = await page.$$eval("[data-testid=member]", (rows) => rows.map((r) => r.dataset.role));
    assert.equal(roles.length, 9, `nine shard members: ${roles}`);
    assert.equal(roles.filter((r) => r === "leader").length, 3, `one leader per shard: ${roles}`);

    await eventually("the namespace and its standby", 10, async () => {
      const primary = await page.getAttribute(`[data-testid=namespace][data-namespace=${namespace}]`, "data-primary-region");
      const standby = await page.$(`[data-testid=standby][data-namespace=${namespace}][data-standby-region=eu-west]`);
      return primary === "us-east" && standby !== null;
    });
    assert.ok(await page.$("[data-testid=failovers-empty]"), "no failover yet");
    const healthy = path.join(outDir, "console-healthy.png");
    await page.screenshot({ path: healthy, fullPage: true });
    assertPng(healthy);

    log("failing the namespace over to eu-west");
    cli("failover", "--namespace", namespace, "--lab", labDir);
    const movedAt = Date.now();
    await eventually("the failover on the page", 6, async () => {
      const primary = await page.getAttribute(`[data-testid=namespace][data-namespace=${namespace}]`, "data-primary-region");
      const row = await page.$(`[data-testid=failover][data-namespace=${namespace}][data-to-region=eu-west]`);
      return primary === "eu-west" && row !== null;
    });
    log(`failover shown ${Date.now() - movedAt} ms after the command returned`);

    log("killing every process of ap-south");
    cli("lab", "kill", "ap-south", "--dir", labDir);
    const killedAt = Date.now();
    // Its control-plane member goes too: when it led, reads wait for the
    // next election (the page keeps its last answers meanwhile).
    await eventually("ap-south shown down", 20, async () =>
      (await page.getAttribute("[data-testid=region][data-region=ap-south]", "data-health")) === "down");
    log(`region down shown ${Date.now() - killedAt} ms after the kill`);
    const unreachable = await page.$$eval("[data-testid=member][data-shard=ap-south-s1]", (rows) => rows.map((r) => r.dataset.role));
    assert.deepEqual(unreachable, ["unreachable", "unreachable", "unreachable"]);
    const after = path.join(outDir, "console-failover-region-down.png");
    await page.screenshot({ path: after, fullPage: true });
    assertPng(after);

    assert.deepEqual(pageErrors, [], "no script errors on the page");
    log(`passed; screenshots in ${outDir}`);
  } finally {
    if (browser) await browser.close();
    try {
      execFileSync(meridian, ["lab", "down", "--dir", labDir], { stdio: "ignore" });
    } catch (e) {
      log(`lab down failed: ${e.message}`);
    }
  }
}

main().catch((e) => {
  process.stderr.write(`console test FAILED: ${e.stack || e}\n`);
  process.exit(1);
});
