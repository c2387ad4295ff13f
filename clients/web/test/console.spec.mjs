// End-to-end test of the operator console: a real server, Debian's Chromium (headless,
// driven by playwright-core, no browser download), and this test acting as the sub-agent.
//
//   node test/console.spec.mjs        (after `npm run build`; clients/web/test.sh does both)
//
// Step 9 serves the console over HTTPS (--tls-cert/--tls-key, a test CA made in
// Node by test/tls-certs.mjs) and Chromium trusts exactly that server certificate.
// The last one runs a durable server (--data-dir), kills it with SIGKILL mid-task and
// restarts it: the task shows INTERRUPTED, is resumed, then rerun from a step.
//
// Env: MSE_GRPC_BIN (default <repo>/target/debug/mse-grpc), CHROMIUM (default
// /usr/bin/chromium), UPDATE_SCREENSHOT=1 to refresh docs/console.png.
// Prints "N passed, M failed" last; exits non-zero on any failure.

import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { copyFileSync, createWriteStream, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { connect, createServer } from "node:net";
import { request as httpsRequest } from "node:https";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { freePort } from "../../ts/test/harness.mjs";
import { makeTestCerts } from "./tls-certs.mjs";

const WEB = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const REPO = resolve(WEB, "../..");
const BIN = process.env.MSE_GRPC_BIN || join(REPO, "target/debug/mse-grpc");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const ARTIFACTS = join(REPO, "test-artifacts");
const FIXTURE = join(REPO, "tests/fixtures/operator.json");
const TOTAL_TIMEOUT_MS = 300_000;
const STEP_TIMEOUT_MS = 20_000;

let passed = 0;
let failed = 0;
const servers = [];
let context;
let profileDir;
let certDir;
let durableDir;
let proxy;
let currentPage;
const pageErrors = [];
const consoleTexts = [];

function log(msg) {
  console.log(`[console.spec] ${msg}`);
}

async function check(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    passed++;
    console.log(`ok   - ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    failed++;
    console.log(`FAIL - ${name}: ${e?.stack || e}`);
    throw new Abort();
  }
}

class Abort extends Error {}

function assert(cond, msg) {
  if (!cond) throw new Error(`assertion failed: ${msg}`);
}

/**
 * A TCP proxy in front of the server: the browser talks through it, so the test can cut
 * every connection (as a flaky network or a restarting load balancer would).
 */
function startProxy(targetPort) {
  const sockets = new Set();
  const srv = createServer((client) => {
    const upstream = connect(targetPort, "127.0.0.1");
    const done = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("error", done);
      s.on("close", done);
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  return new Promise((res, rej) => {
    srv.once("error", rej);
    srv.listen(0, "127.0.0.1", () =>
      res({
        base: `http://127.0.0.1:${srv.address().port}`,
        dropAll: () => {
          const n = sockets.size;
          for (const s of sockets) s.destroy();
          return n;
        },
        close: () => {
          for (const s of sockets) s.destroy();
          srv.close();
        },
      }),
    );
  });
}

/**
 * Opens a second Subscribe for the session over gRPC-Web (hand-framed), reads its welcome
 * and returns the epoch; the page's stream is replaced by it. Aborted when `signal` fires.
 */
async function competingSubscribe(base, sid, token, lastSeq, signal) {
  const sidBytes = Buffer.from(sid, "utf8");
  const varint = (n) => {
    const out = [];
    do {
      let b = n & 0x7f;
      n = Math.floor(n / 128);
      if (n) b |= 0x80;
      out.push(b);
    } while (n);
    return out;
  };
  const msg = Buffer.from([0x0a, ...varint(sidBytes.length), ...sidBytes, 0x10, ...varint(lastSeq)]);
  const framed = Buffer.concat([Buffer.from([0, 0, 0, 0, 0]), msg]);
  framed.writeUInt32BE(msg.length, 1);
  const r = await fetch(`${base}/mlua_swarm.v1.OperatorService/Subscribe`, {
    method: "POST",
    headers: { "content-type": "application/grpc-web+proto", "x-grpc-web": "1", authorization: `Bearer ${token}` },
    body: framed,
    signal,
  });
  assert(r.status === 200, `Subscribe over gRPC-Web → 200, got ${r.status}`);
  const reader = r.body.getReader();
  let buf = Buffer.alloc(0);
  while (buf.length < 5 || buf.length < 5 + buf.readUInt32BE(1)) {
    const { value, done } = await reader.read();
    assert(!done, "the competing Subscribe got its welcome");
    buf = Buffer.concat([buf, Buffer.from(value)]);
  }
  assert(buf[0] === 0, `first gRPC-Web frame is data, trailers: ${buf.subarray(5).toString()}`);
  // ServerFrame{seq = 1 (0, omitted), welcome = 2 {sid = 1, epoch = 2, ...}}: find the epoch.
  const body = buf.subarray(5, 5 + buf.readUInt32BE(1));
  assert(body[0] === 0x12, "first frame is a welcome");
  let i = 2;
  while (body[i] !== 0x10) i += body[i] === 0x0a ? 2 + body[i + 1] : 1;
  let epoch = 0;
  let shift = 1;
  for (i++; ; i++) {
    epoch += (body[i] & 0x7f) * shift;
    shift *= 128;
    if (!(body[i] & 0x80)) break;
  }
  return { epoch, reader };
}

/** The CA (PEM) that signs each HTTPS server's certificate, by origin. */
const caByOrigin = new Map();

/**
 * An HTTP call from the test (the health check, the sub-agent): `fetch` for http://, and
 * node:https for https://, verifying the server against the test CA of that origin (and
 * its name, 127.0.0.1). Returns `{status, text}`.
 */
async function call(url, { method = "GET", headers = {}, body, timeoutMs = 10_000 } = {}) {
  const u = new URL(url);
  if (u.protocol === "http:") {
    const r = await fetch(url, { method, headers, body, signal: AbortSignal.timeout(timeoutMs) });
    return { status: r.status, text: await r.text() };
  }
  const ca = caByOrigin.get(u.origin);
  assert(ca, `a test CA is known for ${u.origin}`);
  return new Promise((res, rej) => {
    const req = httpsRequest(url, { method, headers, ca, agent: false, timeout: timeoutMs }, (r) => {
      const chunks = [];
      r.on("data", (c) => chunks.push(c));
      r.on("end", () => res({ status: r.statusCode, text: Buffer.concat(chunks).toString("utf8") }));
      r.on("error", rej);
    });
    req.on("timeout", () => req.destroy(new Error(`${method} ${url} timed out`)));
    req.on("error", rej);
    req.end(body);
  });
}

/**
 * Starts `mse-grpc serve --ephemeral` on a free port (plus `extra` arguments). With `tls`
 * ({cert, key, caPem}) it serves HTTPS with that certificate and the base is https://.
 * With `durable` ({dataDir, port?}) it keeps its data in `dataDir` (no --ephemeral), on
 * `port` if given (a restart on the same origin).
 */
async function startServer(extra = [], name = "server", tls = null, durable = null) {
  assert(existsSync(BIN), `server binary ${BIN} exists (cargo build, or set MSE_GRPC_BIN)`);
  const port = durable?.port ?? (await freePort());
  const base = `${tls ? "https" : "http"}://127.0.0.1:${port}`;
  if (tls) {
    extra = [...extra, "--tls-cert", tls.cert, "--tls-key", tls.key];
    caByOrigin.set(base, tls.caPem);
  }
  const logFile = join(ARTIFACTS, `${name}.log`);
  const out = createWriteStream(logFile);
  const cwd = mkdtempSync(join(tmpdir(), "mse-console-srv-"));
  const storage = durable ? ["--data-dir", durable.dataDir] : ["--ephemeral"];
  const child = spawn(BIN, ["serve", ...storage, "--bind", `127.0.0.1:${port}`, ...extra], {
    cwd,
    env: { ...process.env, MSE_CONSOLE_DIR: join(WEB, "dist"), RUST_LOG: process.env.RUST_LOG || "info" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  child.stdout.pipe(out);
  child.stderr.pipe(out);
  let exited = null;
  child.once("exit", (code, sig) => (exited = `exited with ${code ?? sig}`));
  const srv = { child, cwd, base, logFile };
  servers.push(srv);
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (exited) throw new Error(`server ${exited} before it was ready; see ${logFile}`);
    try {
      const r = await call(`${base}/healthz`, { timeoutMs: 1000 });
      if (r.status === 200 && r.text.trim() === "ok") break;
    } catch {
      /* not listening yet */
    }
    if (Date.now() > deadline) throw new Error(`server not healthy within 30 s; see ${logFile}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  log(`${name} ${BIN} ready at ${base} (pid ${child.pid})`);
  return base;
}

/** SIGTERM (SIGKILL after 8 s), then removes its directory; returns how it exited. */
async function stopServer({ child, cwd }) {
  let how = { code: child.exitCode, signal: child.signalCode };
  if (child.exitCode === null && child.signalCode === null) {
    const gone = new Promise((r) => child.once("exit", (code, signal) => r({ code, signal })));
    child.kill("SIGTERM");
    const t = setTimeout(() => child.kill("SIGKILL"), 8000);
    how = await gone;
    clearTimeout(t);
  }
  rmSync(cwd, { recursive: true, force: true });
  return how;
}

async function stopServers() {
  for (const srv of servers.splice(0)) await stopServer(srv);
}

/** The sub-agent: fetches the step's prompt and submits a result over the v0.1.0 routes. */
async function actAsWorker(base, stepId, handle, body) {
  const auth = { authorization: `Bearer ${handle}` };
  const p = await call(`${base}/v1/worker/prompt?task_id=${encodeURIComponent(stepId)}`, { headers: auth });
  assert(p.status === 200, `GET /v1/worker/prompt → 200, got ${p.status}: ${p.text}`);
  const prompt = JSON.parse(p.text);
  const s = await call(`${base}/v1/worker/submit`, {
    method: "POST",
    headers: { ...auth, "content-type": "text/plain" },
    body,
  });
  assert(s.status === 204, `POST /v1/worker/submit → 204, got ${s.status}: ${s.text}`);
  return prompt;
}

/** `skipReq`: not the card of that request (one from before a server restart). */
const card = (page, kind, taskId, skipReq) =>
  page.locator(`[data-testid="frame-${kind}"][data-task-id="${taskId}"]${skipReq ? `:not([data-req-id="${skipReq}"])` : ""}`);
const taskRow = (page, taskId) => page.locator(`[data-testid="task-row"][data-task-id="${taskId}"]`);

/** Creates a session with the role "remote" in the UI; its Subscribe connects (epoch 1). */
async function createSession(page) {
  await page.getByTestId("roles-input").fill("remote");
  await page.getByTestId("create-session").click();
  await page.locator('[data-testid="conn-state"][data-state="connected"]', { hasText: "epoch 1" }).waitFor();
}

/** Stores tests/fixtures/operator.json as op-one (a new server: "stored") and picks it. */
async function storeFixture(page, fixture) {
  await page.getByTestId("bp-id").fill("op-one");
  await page.getByTestId("bp-json").fill(fixture);
  await page.getByTestId("bp-store").click();
  await page.getByTestId("bp-result").filter({ hasText: /stored op-one @ [0-9a-f]{12}/ }).waitFor();
  await page.getByTestId("bp-select").selectOption("op-one");
}

async function startTask(page, input) {
  await page.getByTestId("init-ctx").fill(JSON.stringify({ input }));
  await page.getByTestId("start-task").click();
  await page.getByTestId("start-result").filter({ hasText: /started task-/ }).waitFor();
  const taskId = (await page.getByTestId("start-result").textContent()).replace("started ", "").trim();
  assert(/^task-[0-9a-f-]+$/.test(taskId), `task id looks like task-<uuid>: ${taskId}`);
  await taskRow(page, taskId).waitFor();
  return taskId;
}

/** Approves the task's hook, then serves its spawn as the worker and acks it in the UI. */
async function runSpawn(page, base, taskId, input, result, beforeAck, skipReq) {
  const spawnCard = card(page, "spawn", taskId, skipReq);
  await spawnCard.waitFor();
  const stepId = (await spawnCard.getByTestId("spawn-step-id").textContent()).trim();
  const handle = (await spawnCard.getByTestId("spawn-worker-handle").textContent()).trim();
  assert(/^ST-/.test(stepId), `spawn shows the step id (ST-…): ${stepId}`);
  assert(/^wh-[0-9a-f]{40}$/.test(handle), `spawn shows the worker handle (wh- + 8 hex boot id + 32 hex): ${handle}`);
  const prompt = await actAsWorker(base, stepId, handle, result);
  assert(String(prompt.prompt).includes(input), `worker prompt carries the input: ${JSON.stringify(prompt)}`);
  if (beforeAck) await beforeAck();
  await spawnCard.getByTestId("ack-spawn").click();
  await spawnCard.waitFor({ state: "detached" });
}

/** Waits until the live strip's `name` figure (stats-<name>) reads `n` (it polls every 2 s). */
async function stat(page, name, n) {
  await page.locator(`[data-testid="stats-${name}"]`, { hasText: new RegExp(`^${n}$`) }).waitFor();
}

async function expectCompleted(page, taskId, input, result) {
  const row = taskRow(page, taskId);
  await row.locator('[data-testid="task-state"][data-state="COMPLETED"]').waitFor();
  const finalText = await page.locator(`tr.detail[data-task-id="${taskId}"] [data-testid="task-final"]`).textContent();
  const final = JSON.parse(finalText);
  assert(final.output === result, `final_ctx.output is the submitted text: ${finalText}`);
  assert(final.input === input, `final_ctx.input is the init_ctx input: ${finalText}`);
  assert((await row.getByTestId("task-result").textContent()) === result, "the Result column shows the output");
}

/** Collects the page's errors and everything it logs. */
function watchPage(page) {
  currentPage = page;
  page.on("pageerror", (e) => pageErrors.push(`pageerror: ${e.message}`));
  page.on("console", (m) => {
    consoleTexts.push(m.text());
    // Chromium logs the connections the test cuts on purpose ("Failed to load resource:
    // net::ERR_…"); everything else logged as an error counts.
    if (m.type() === "error" && !/^Failed to load resource: net::ERR_/.test(m.text())) pageErrors.push(`console.error: ${m.text()}`);
  });
}

/** sessionStorage and localStorage of the page, as objects. */
async function storages(page) {
  return page.evaluate(() => ({ session: { ...sessionStorage }, local: { ...localStorage } }));
}

async function savedSession(page) {
  return page.evaluate(() => JSON.parse(localStorage.getItem("mse-console/session/v1") || "null"));
}

async function main() {
  mkdirSync(ARTIFACTS, { recursive: true });
  rmSync(join(ARTIFACTS, "console-failure.png"), { force: true });
  const base = await startServer();
  proxy = await startProxy(Number(new URL(base).port));
  const fixture = readFileSync(FIXTURE, "utf8");
  // For the HTTPS step: a test CA and the server certificate it signs. Chromium is told to
  // trust that one certificate (by its public key), nothing else.
  certDir = mkdtempSync(join(tmpdir(), "mse-console-tls-"));
  const certs = makeTestCerts(certDir);

  assert(existsSync(CHROMIUM), `${CHROMIUM} exists (apt-get install chromium)`);
  profileDir = mkdtempSync(join(tmpdir(), "mse-console-chromium-"));
  context = await chromium.launchPersistentContext(profileDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic", `--ignore-certificate-errors-spki-list=${certs.spki}`],
    viewport: { width: 1440, height: 960 },
    timeout: 30_000,
  });
  context.setDefaultTimeout(STEP_TIMEOUT_MS);
  const page = context.pages()[0] ?? (await context.newPage());
  watchPage(page);
  let sid;
  await check("console loads from the server, no session yet", async () => {
    const r = await page.goto(`${proxy.base}/`);
    assert(r.status() === 200, `GET / → 200, got ${r.status()}`);
    await page.getByTestId("create-session").waitFor();
    assert((await page.getByTestId("conn-state").getAttribute("data-state")) === "idle", "connection state idle");
  });

  await check('create a session with role "remote"; Subscribe connects (epoch 1)', async () => {
    await page.getByTestId("roles-input").fill("remote");
    await page.getByTestId("create-session").click();
    await page.locator('[data-testid="conn-state"][data-state="connected"]').waitFor();
    assert((await page.getByTestId("conn-state").textContent()).includes("epoch 1"), "epoch 1");
    sid = (await page.getByTestId("session-sid").textContent()).trim();
    assert(/^op-/.test(sid), `sid op-…: ${sid}`);
    const saved = await savedSession(page);
    assert(saved && saved.sid === sid && /^[0-9a-f]{32}$/.test(saved.token), "sid and token persisted in localStorage");
  });

  await check("store the operator Blueprint (tests/fixtures/operator.json)", async () => {
    await page.getByTestId("bp-id").fill("op-one");
    await page.getByTestId("bp-json").fill(fixture);
    await page.getByTestId("bp-store").click();
    await page.getByTestId("bp-result").filter({ hasText: /(stored|unchanged) op-one @ [0-9a-f]{12}/ }).waitFor();
    await page.locator('[data-testid="bp-select"] option[value="op-one"]').waitFor({ state: "attached" });
    await page.getByTestId("bp-select").selectOption("op-one");
  });

  const input1 = "hello from the browser";
  const result1 = "an old silent pond / a frog jumps into the pond / splash! silence again";
  let task1;
  await check("live strip (GetStats): an idle server, nothing completed", async () => {
    await stat(page, "completed", 0);
    await stat(page, "in-flight", 0);
    await stat(page, "pending", 0);
    await stat(page, "unacked", 0);
  });

  await check("task 1: start, approve hook_before, worker submits, ack spawn → COMPLETED", async () => {
    task1 = await startTask(page, input1);
    const hook = card(page, "hook-before", task1);
    await hook.waitFor();
    // The strip shows the task running and its hook waiting for a reply.
    await stat(page, "in-flight", 1);
    await stat(page, "pending", 1);
    await hook.getByTestId("hook-approve").click();
    await hook.waitFor({ state: "detached" });
    await runSpawn(page, base, task1, input1, result1);
    await expectCompleted(page, task1, input1, result1);
  });

  await check("task 1: every frame handled and acked (hook_before, spawn, hook_after)", async () => {
    await page.locator('[data-testid="session-acked"]', { hasText: /^3$/ }).waitFor();
    const saved = await savedSession(page);
    assert(saved.acked === 3 && saved.handled.length === 0, `localStorage acked 3: ${JSON.stringify(saved)}`);
    assert((await page.getByTestId("pending-count").textContent()) === "0", "no pending frames");
  });

  await check("live strip: completed / min moves to 1 after task 1, nothing in flight or pending", async () => {
    await stat(page, "completed", 1);
    await stat(page, "in-flight", 0);
    await stat(page, "pending", 0);
    await stat(page, "unacked", 0);
    assert(!(await page.getByTestId("stats").getAttribute("class")).includes("stale"), "the strip is live");
  });

  const input2 = "second task, across a reload";
  const result2 = "resumed after a reload";
  let task2;
  let hookReq;
  await check("task 2: hook_before pending, page reload resumes the session and re-shows it", async () => {
    task2 = await startTask(page, input2);
    const hook = card(page, "hook-before", task2);
    await hook.waitFor();
    hookReq = await hook.getAttribute("data-req-id");
    const seq = Number(await hook.getAttribute("data-seq"));
    assert(seq === 4, `hook_before of task 2 is seq 4, got ${seq}`);
    assert((await savedSession(page)).acked === 3, "the pending hook is not acked");

    await page.reload();
    await page.locator('[data-testid="conn-state"][data-state="connected"]').waitFor();
    assert((await page.getByTestId("conn-state").textContent()).includes("epoch 2"), "resumed as epoch 2");
    assert((await page.getByTestId("session-sid").textContent()).trim() === sid, "same sid after reload");
    const again = card(page, "hook-before", task2);
    await again.waitFor();
    assert((await again.getAttribute("data-req-id")) === hookReq, "the same hook_before request is shown again");
    await page.getByTestId("activity").getByText(/epoch 2, server acked seq 3, 1 frame\(s\) replayed/).waitFor();
    await taskRow(page, task1).locator('[data-state="COMPLETED"]').waitFor();
    await page.locator('[data-testid="bp-select"] option[value="op-one"]').waitFor({ state: "attached" });
    assert((await page.getByTestId("bp-select").inputValue()) === "op-one", "the chosen Blueprint survives the reload");
  });

  await check("task 2: approve after the reload, worker submits, ack spawn → COMPLETED", async () => {
    const hook = card(page, "hook-before", task2);
    await hook.getByTestId("hook-approve").click();
    await hook.waitFor({ state: "detached" });
    await runSpawn(page, base, task2, input2, result2, async () => {
      // A populated moment for the docs: a completed task, a running one, a pending spawn.
      await taskRow(page, task1).getByTestId("task-toggle").click();
      await page.evaluate(() => window.scrollTo(0, 0));
      await page.screenshot({ path: join(ARTIFACTS, "console-populated.png") });
    });
    await expectCompleted(page, task2, input2, result2);
    await page.locator('[data-testid="session-acked"]', { hasText: /^6$/ }).waitFor();
  });

  await check("task 3: reject the hook with a reason → FAILED with that reason", async () => {
    const task3 = await startTask(page, "to be rejected");
    const hook = card(page, "hook-before", task3);
    await hook.waitFor();
    await hook.getByTestId("hook-reason").fill("not today");
    await hook.getByTestId("hook-reject").click();
    await hook.waitFor({ state: "detached" });
    const row = taskRow(page, task3);
    await row.locator('[data-testid="task-state"][data-state="FAILED"]').waitFor();
    const err = await row.getByTestId("task-result").textContent();
    assert(err.includes("not today"), `the task error carries the reason: ${err}`);
  });

  await check("task 4: the network drops every connection; Subscribe reconnects by itself", async () => {
    const input = "through a network drop";
    const result = "survived the drop";
    const task4 = await startTask(page, input);
    const hook = card(page, "hook-before", task4);
    await hook.waitFor();
    const dropped = proxy.dropAll();
    assert(dropped > 0, "there were connections to drop");
    await page.getByTestId("activity").getByText(/Subscribe dropped \(.*\); reconnecting in/).first().waitFor();
    await page.locator('[data-testid="conn-state"][data-state="connected"]', { hasText: "epoch 3" }).waitFor();
    await page.getByTestId("activity").getByText(/epoch 3, server acked seq 7, 1 frame\(s\) replayed/).waitFor();
    assert((await card(page, "hook-before", task4).count()) === 1, "the replayed hook is shown once");
    await hook.getByTestId("hook-approve").click();
    await hook.waitFor({ state: "detached" });
    await runSpawn(page, base, task4, input, result);
    await expectCompleted(page, task4, input, result);
  });

  await check("another stream takes the session: console shows closed; Reconnect takes it back", async () => {
    const saved = await savedSession(page);
    const ac = new AbortController();
    const other = await competingSubscribe(base, saved.sid, saved.token, saved.acked, ac.signal);
    assert(other.epoch === 4, `the competing stream is epoch 4, got ${other.epoch}`);
    await page.locator('[data-testid="conn-state"][data-state="closed"]', { hasText: "replaced by a newer stream" }).waitFor();
    await page.waitForTimeout(1500); // no automatic reconnect after closing{retry_after_ms: 0}
    assert((await page.getByTestId("conn-state").getAttribute("data-state")) === "closed", "stays closed");
    await page.getByTestId("reconnect").click();
    await page.locator('[data-testid="conn-state"][data-state="connected"]', { hasText: "epoch 5" }).waitFor();
    // The competing stream was replaced in turn: it ends after its closing frame.
    for (;;) {
      const { done } = await other.reader.read();
      if (done) break;
    }
    ac.abort();
  });

  await check("no errors shown in the console, none in the page", async () => {
    const shown = await page.getByTestId("error").allTextContents();
    assert(shown.length === 0, `error banner is empty: ${JSON.stringify(shown)}`);
    assert(pageErrors.length === 0, `no page errors: ${JSON.stringify(pageErrors)}`);
  });

  await check("screenshots", async () => {
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.screenshot({ path: join(ARTIFACTS, "console.png") });
    const docs = join(REPO, "docs/console.png");
    if (process.env.UPDATE_SCREENSHOT === "1" || !existsSync(docs)) {
      copyFileSync(join(ARTIFACTS, "console-populated.png"), docs);
      log(`wrote ${docs}`);
    }
    log(`screenshots in ${ARTIFACTS}`);
  });

  // A server started with --api-token: the console asks for the token on the first refused
  // call, checks it, keeps it for the tab (sessionStorage) and sends it on every call.
  const token = `api-${randomBytes(16).toString("hex")}`;
  const base2 = await startServer(["--api-token", token], "server-api-token");
  const page2 = await context.newPage();
  watchPage(page2);
  const dialog = (state) => page2.locator(`[data-testid="api-token-dialog"][open]${state ? `[data-state="${state}"]` : ""}`);

  await check("--api-token server: the first call is refused and the console asks for the token", async () => {
    const r = await page2.goto(`${base2}/`);
    assert(r.status() === 200, `GET / → 200, got ${r.status()}`);
    await dialog("missing").waitFor();
    const msg = await page2.getByTestId("api-token-message").textContent();
    assert(/needs an API token/.test(msg), `the prompt says a token is needed: ${msg}`);
    assert((await page2.getByTestId("api-token-button").getAttribute("data-state")) === "needed", "header button: needed");
  });

  await check("a wrong token is refused, said so, and not kept", async () => {
    await page2.getByTestId("api-token-input").fill("not-the-token");
    await page2.getByTestId("api-token-save").click();
    await dialog("refused").waitFor();
    const msg = await page2.getByTestId("api-token-message").textContent();
    assert(/refused that token/.test(msg), `the prompt says the token was refused: ${msg}`);
    const st = await storages(page2);
    assert(!("mse.apiToken" in st.session), `a refused token is not stored: ${JSON.stringify(Object.keys(st.session))}`);
    await page2.screenshot({ path: join(ARTIFACTS, "console-api-token.png") });
  });

  await check("the right token is accepted: the waiting calls go through; kept in sessionStorage only", async () => {
    await page2.getByTestId("api-token-input").fill(token);
    await page2.getByTestId("api-token-save").click();
    await dialog().waitFor({ state: "detached" });
    // ListBlueprints and ListTasks waited for the token, then were sent again with it.
    await page2.locator('[data-testid="bp-select"] option').first().waitFor({ state: "attached" });
    await page2.getByTestId("activity").getByText("API token accepted").waitFor();
    assert((await page2.getByTestId("api-token-button").getAttribute("data-state")) === "set", "header button: set");
    const st = await storages(page2);
    assert(st.session["mse.apiToken"] === token, "the token is in sessionStorage");
    assert(!JSON.stringify(st.local).includes(token), "the token is not in localStorage");
  });

  await check("with the token: create a session, store the Blueprint, run a task → COMPLETED", async () => {
    await createSession(page2);
    await storeFixture(page2, fixture);
    const input = "behind an API token";
    const result = "token accepted, task done";
    const task = await startTask(page2, input);
    const hook = card(page2, "hook-before", task);
    await hook.waitFor();
    await hook.getByTestId("hook-approve").click();
    await hook.waitFor({ state: "detached" });
    await runSpawn(page2, base2, task, input, result);
    await expectCompleted(page2, task, input, result);
  });

  await check("a reload keeps the token for the tab: no prompt, the session resumes", async () => {
    await page2.reload();
    await page2.locator('[data-testid="conn-state"][data-state="connected"]', { hasText: "epoch 2" }).waitFor();
    await page2.locator('[data-testid="task-state"][data-state="COMPLETED"]').first().waitFor();
    assert((await dialog().count()) === 0, "no token prompt after the reload");
    assert((await page2.getByTestId("api-token-button").getAttribute("data-state")) === "set", "header button: set");
  });

  await check("API token button: forget the token; the next call asks again; enter it again", async () => {
    await page2.getByTestId("api-token-button").click();
    await dialog("change").waitFor();
    await page2.getByTestId("api-token-forget").click();
    await dialog().waitFor({ state: "detached" });
    assert(!("mse.apiToken" in (await storages(page2)).session), "forgotten: not in sessionStorage");
    // The ListTasks poll (every 1.5 s) is refused without it.
    await dialog("missing").waitFor();
    await page2.getByTestId("api-token-input").fill(token);
    await page2.getByTestId("api-token-save").click();
    await dialog().waitFor({ state: "detached" });
    assert((await storages(page2)).session["mse.apiToken"] === token, "stored again");
  });

  await check("the token is never shown, logged or kept in localStorage; no errors", async () => {
    const visible = await page2.evaluate(() => document.body.innerText);
    assert(!visible.includes(token), "the token is not shown in the page");
    assert(!consoleTexts.some((t) => t.includes(token)), "the token is not in the browser console");
    assert(!JSON.stringify((await storages(page2)).local).includes(token), "the token is not in localStorage");
    const shown = await page2.getByTestId("error").allTextContents();
    assert(shown.length === 0, `error banner is empty: ${JSON.stringify(shown)}`);
    assert(pageErrors.length === 0, `no page errors: ${JSON.stringify(pageErrors)}`);
  });
  // The same console served over HTTPS (--tls-cert/--tls-key): Chromium trusts exactly the
  // test server certificate (--ignore-certificate-errors-spki-list with its key's hash);
  // the sub-agent (this test) verifies it against the test CA.
  const base3 = await startServer([], "server-tls", { cert: certs.cert, key: certs.key, caPem: certs.caPem });
  const tlsSrv = servers.find((s) => s.base === base3);
  await page2.close();
  const page3 = await context.newPage();
  watchPage(page3);
  const tlsConsole = []; // every console message of type error or warning, none excused
  const offOrigin = []; // requests the page made anywhere but the HTTPS origin
  page3.on("console", (m) => {
    if (m.type() === "error" || m.type() === "warning") tlsConsole.push(`${m.type()}: ${m.text()}`);
  });
  page3.on("request", (r) => {
    if (new URL(r.url()).origin !== base3) offOrigin.push(r.url());
  });
  page3.on("requestfailed", (r) => tlsConsole.push(`request failed: ${r.url()} ${r.failure()?.errorText}`));

  await check("TLS server: its certificate verifies against the test CA for 127.0.0.1; not publicly trusted", async () => {
    const r = await call(`${base3}/healthz`);
    assert(r.status === 200 && r.text.trim() === "ok", `GET /healthz over HTTPS with the CA → ok, got ${r.status} ${r.text}`);
    let err;
    try {
      await fetch(`${base3}/healthz`, { signal: AbortSignal.timeout(5000) });
    } catch (e) {
      err = e;
    }
    assert(err, "without the test CA, Node's fetch refuses the certificate");
    const code = err.cause?.code ?? "";
    assert(/CERT|SIGN|ISSUER|VERIFY/.test(code), `refused for the certificate: ${code || err}`);
  });

  await check("HTTPS: the console loads over https with the server certificate, no session yet", async () => {
    const r = await page3.goto(`${base3}/`);
    assert(r.status() === 200, `GET / → 200, got ${r.status()}`);
    const sec = await r.securityDetails();
    assert(sec && /^TLS 1\.[23]$/.test(sec.protocol), `TLS 1.2 or 1.3: ${JSON.stringify(sec)}`);
    assert(sec.subjectName === "127.0.0.1" && sec.issuer === "mse-grpc console test CA", `the test certificate: ${JSON.stringify(sec)}`);
    const loc = await page3.evaluate(() => ({
      origin: location.origin,
      protocol: location.protocol,
      secure: window.isSecureContext,
      alpn: performance.getEntriesByType("navigation")[0]?.nextHopProtocol,
    }));
    assert(loc.protocol === "https:" && loc.origin === base3, `page origin is ${base3}: ${JSON.stringify(loc)}`);
    assert(loc.secure, "a secure context");
    log(`HTTPS page: ${sec.protocol}, ALPN ${loc.alpn}`);
    await page3.getByTestId("create-session").waitFor();
    assert((await page3.getByTestId("conn-state").getAttribute("data-state")) === "idle", "connection state idle");
  });

  await check("HTTPS: ListBlueprints over gRPC-Web shows the seed Blueprint main", async () => {
    await page3.locator('[data-testid="bp-select"] option[value="main"]').waitFor({ state: "attached" });
  });

  await check("HTTPS: create a session, store the operator Blueprint, run a task → COMPLETED", async () => {
    await createSession(page3);
    await storeFixture(page3, fixture);
    const input = "over HTTPS";
    const result = "served over TLS, end to end";
    const task = await startTask(page3, input);
    const hook = card(page3, "hook-before", task);
    await hook.waitFor();
    await hook.getByTestId("hook-approve").click();
    await hook.waitFor({ state: "detached" });
    await runSpawn(page3, base3, task, input, result);
    await expectCompleted(page3, task, input, result);
    await page3.locator('[data-testid="session-acked"]', { hasText: /^3$/ }).waitFor();
  });

  await check("HTTPS: every request went to the https origin; no errors in the banner, page or console", async () => {
    await page3.screenshot({ path: join(ARTIFACTS, "console-https.png") });
    assert(offOrigin.length === 0, `requests off the https origin: ${JSON.stringify(offOrigin)}`);
    const shown = await page3.getByTestId("error").allTextContents();
    assert(shown.length === 0, `error banner is empty: ${JSON.stringify(shown)}`);
    assert(pageErrors.length === 0, `no page errors: ${JSON.stringify(pageErrors)}`);
    assert(tlsConsole.length === 0, `no console errors or warnings: ${JSON.stringify(tlsConsole)}`);
  });

  await check("Chromium trusts that one certificate only: another test CA's server is refused", async () => {
    const otherDir = mkdtempSync(join(certDir, "other-"));
    const other = makeTestCerts(otherDir);
    const base4 = await startServer([], "server-tls-other", { cert: other.cert, key: other.key, caPem: other.caPem });
    const probe = await context.newPage(); // not watched: this navigation fails on purpose
    let err;
    try {
      await probe.goto(`${base4}/`);
    } catch (e) {
      err = e;
    }
    await probe.close();
    await stopServer(servers.splice(servers.findIndex((s) => s.base === base4), 1)[0]);
    assert(err && /ERR_CERT_AUTHORITY_INVALID/.test(err.message), `navigation refused for the certificate: ${err?.message}`);
  });

  await check("HTTPS: the server stops on SIGTERM", async () => {
    await page3.close();
    servers.splice(servers.indexOf(tlsSrv), 1);
    const how = await stopServer(tlsSrv);
    assert(how.code === 0, `exit code 0 after SIGTERM: ${JSON.stringify(how)}`);
  });

  await durableSteps(fixture);
}

/** SIGKILL, no goodbye: the server dies mid-run, as on a crash. */
async function killServer(base) {
  const srv = servers.splice(servers.findIndex((s) => s.base === base), 1)[0];
  const gone = new Promise((r) => srv.child.once("exit", (code, signal) => r(signal)));
  srv.child.kill("SIGKILL");
  assert((await gone) === "SIGKILL", "the server died of SIGKILL");
  rmSync(srv.cwd, { recursive: true, force: true });
}

/** The task's runs as shown: [{start, end, fromStep, replayed}]. */
async function shownRuns(page, taskId) {
  return page
    .locator(`tr.detail[data-task-id="${taskId}"] [data-testid="task-run"]`)
    .evaluateAll((els) => els.map((e) => ({ start: e.dataset.start, end: e.dataset.end, fromStep: e.dataset.fromStep, replayed: Number(e.dataset.replayed) })));
}

/**
 * A durable server (--data-dir, --resume-interrupted manual): a task waiting on its
 * operator step survives a kill -9 as INTERRUPTED; Resume finishes it; Rerun from a step
 * adds a run; a rerun the server refuses shows the server's message.
 */
async function durableSteps(fixture) {
  durableDir = mkdtempSync(join(tmpdir(), "mse-console-durable-"));
  const durable = { dataDir: join(durableDir, "data") };
  const flags = ["--resume-interrupted", "manual"];
  const base = await startServer(flags, "server-durable", null, durable);
  durable.port = Number(new URL(base).port);
  const page = await context.newPage();
  watchPage(page);
  const input = "across a kill -9";
  let task;
  let oldSpawn;

  await check("durable server: a task waits on its operator step (spawn pending); kill -9", async () => {
    await page.goto(`${base}/`);
    await createSession(page);
    await storeFixture(page, fixture);
    task = await startTask(page, input);
    const hook = card(page, "hook-before", task);
    await hook.getByTestId("hook-approve").click();
    await hook.waitFor({ state: "detached" });
    oldSpawn = await card(page, "spawn", task).getAttribute("data-req-id");
    await killServer(base);
  });

  let errorsBefore = 0;
  await check("restarted on the same data dir: the console shows the task INTERRUPTED, its launch run interrupted", async () => {
    await startServer(flags, "server-durable-2", null, durable);
    const row = taskRow(page, task);
    await row.locator('[data-testid="task-state"][data-state="INTERRUPTED"]').waitFor();
    assert(await row.getByTestId("task-resume").isVisible(), "an INTERRUPTED task offers Resume");
    assert(!(await row.getByTestId("task-cancel").isVisible()), "and no cancel");
    assert((await row.getByTestId("task-result").textContent()) === "server restart", "the Result column says why");
    await row.getByTestId("task-toggle").click();
    await page.locator(`tr.detail[data-task-id="${task}"] [data-testid="task-run"][data-end="interrupted"]`).waitFor();
    const runs = await shownRuns(page, task);
    assert(runs.length === 1 && runs[0].start === "launch", `one run, the launch: ${JSON.stringify(runs)}`);
    // The session: a server that keeps operator sessions takes the stream back; one that
    // does not says NOT_FOUND, and a new session takes the seat "remote".
    const conn = page.locator('[data-testid="conn-state"][data-state="connected"], [data-testid="conn-state"][data-state="closed"]');
    await conn.waitFor();
    if ((await page.getByTestId("conn-state").getAttribute("data-state")) === "closed") {
      log(`the session did not survive the restart: ${await page.getByTestId("conn-state").textContent()}`);
      await page.getByTestId("leave-session").click();
      await createSession(page);
    }
    // The outage itself (ListTasks, Subscribe refused while the server was down) is not
    // what this step checks: from here on, no error is expected but the one provoked below.
    const banner = page.getByTestId("error-banner");
    if (await banner.isVisible()) await banner.getByRole("button", { name: "dismiss all" }).click();
    errorsBefore = pageErrors.length;
    await page.screenshot({ path: join(ARTIFACTS, "console-interrupted.png") });
  });

  const result = "finished after the restart";
  await check("Resume → RUNNING; the step in flight is dispatched again; served → COMPLETED", async () => {
    const row = taskRow(page, task);
    await row.getByTestId("task-resume").click();
    await row.locator('[data-testid="task-state"][data-state="RUNNING"]').waitFor();
    assert(!(await row.getByTestId("task-resume").isVisible()), "no Resume on a running task");
    const hook = card(page, "hook-before", task);
    await hook.getByTestId("hook-approve").click();
    await hook.waitFor({ state: "detached" });
    await runSpawn(page, base, task, input, result, null, oldSpawn);
    await expectCompleted(page, task, input, result);
    await page.locator(`tr.detail[data-task-id="${task}"] [data-testid="task-run"][data-start="resume"][data-end="completed"]`).waitFor();
    const runs = await shownRuns(page, task);
    assert(runs.length === 2, `two runs: ${JSON.stringify(runs)}`);
    assert(runs[0].end === "interrupted" && runs[1].start === "resume", `launch interrupted, then resume: ${JSON.stringify(runs)}`);
  });

  await check("Rerun from step worker → a new run in the history; served again → COMPLETED", async () => {
    const row = taskRow(page, task);
    const detail = page.locator(`tr.detail[data-task-id="${task}"]`);
    await detail.locator('[data-testid="task-rerun-step"] option[value="worker"]').waitFor({ state: "attached" });
    await detail.getByTestId("task-rerun-step").selectOption("worker");
    await detail.getByTestId("task-rerun").click();
    await detail.getByTestId("task-run-result").filter({ hasText: /rerun from worker/ }).waitFor();
    await detail.locator('[data-testid="task-run"][data-start="rerun"][data-from-step="worker"]').waitFor();
    await row.locator('[data-testid="task-state"][data-state="RUNNING"]').waitFor();
    const hook = card(page, "hook-before", task);
    await hook.getByTestId("hook-approve").click();
    await hook.waitFor({ state: "detached" });
    const again = "rerun from worker, done";
    await runSpawn(page, base, task, input, again, null, oldSpawn);
    await expectCompleted(page, task, input, again);
    await detail.locator('[data-testid="task-run"][data-start="rerun"][data-end="completed"]').waitFor();
    const runs = await shownRuns(page, task);
    assert(runs.length === 3, `three runs: ${JSON.stringify(runs)}`);
    assert(runs[2].fromStep === "worker", `the rerun names its step: ${JSON.stringify(runs)}`);
    await page.screenshot({ path: join(ARTIFACTS, "console-runs.png") });
  });

  await check("a rerun the server refuses shows the server's message (a step the journal does not hold)", async () => {
    const rejected = await startTask(page, "rejected, so nothing journaled");
    const hook = card(page, "hook-before", rejected);
    await hook.getByTestId("hook-reason").fill("no");
    await hook.getByTestId("hook-reject").click();
    const row = taskRow(page, rejected);
    await row.locator('[data-testid="task-state"][data-state="FAILED"]').waitFor();
    await row.getByTestId("task-toggle").click();
    const detail = page.locator(`tr.detail[data-task-id="${rejected}"]`);
    await detail.locator('[data-testid="task-rerun-step"] option[value="worker"]').waitFor({ state: "attached" });
    await detail.getByTestId("task-rerun").click();
    const said = detail.getByTestId("task-run-result").filter({ hasText: /^INVALID_ARGUMENT: / });
    await said.waitFor();
    const text = await said.textContent();
    assert(/holds no step 'worker'/.test(text), `the server's words: ${text}`);
    const shown = await page.getByTestId("error").allTextContents();
    assert(shown.length === 1 && shown[0].includes(`RerunTask`) && shown[0].includes("INVALID_ARGUMENT"), `the banner shows it: ${JSON.stringify(shown)}`);
    const others = pageErrors.slice(errorsBefore).filter((e) => !e.includes("RerunTask"));
    assert(others.length === 0, `no other page errors: ${JSON.stringify(others)}`);
    await page.close();
  });
}

const watchdog = setTimeout(() => {
  console.log(`FAIL - whole run exceeded ${TOTAL_TIMEOUT_MS / 1000} s`);
  failed++;
  void finish(1);
}, TOTAL_TIMEOUT_MS);

async function finish(code) {
  clearTimeout(watchdog);
  try {
    await context?.close();
  } catch (e) {
    log(`closing the browser: ${e}`);
  }
  if (profileDir) rmSync(profileDir, { recursive: true, force: true });
  if (certDir) rmSync(certDir, { recursive: true, force: true });
  if (durableDir) rmSync(durableDir, { recursive: true, force: true });
  proxy?.close();
  await stopServers();
  if (failed && pageErrors.length) log(`page errors:\n  ${pageErrors.join("\n  ")}`);
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(code || (failed ? 1 : 0));
}

main().then(
  () => finish(0),
  async (e) => {
    if (!(e instanceof Abort)) {
      failed++;
      console.log(`FAIL - setup: ${e?.stack || e}`);
    }
    for (const srv of servers) log(`server log: ${srv.logFile}`);
    try {
      const page = currentPage;
      if (page) await page.screenshot({ path: join(ARTIFACTS, "console-failure.png") });
    } catch {
      /* best effort */
    }
    await finish(1);
  },
);
