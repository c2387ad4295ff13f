// Test harness: a real mse-grpc server as a child process on a free port, TaskService
// clients over gRPC-Web, inline Blueprints, and polling helpers (never a fixed sleep).

import { spawn } from "node:child_process";
import { createWriteStream, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createTransport, valueToJson } from "@mlua-swarm/operator";
import { TaskService, TaskState } from "@mlua-swarm/operator/gen/task_pb";

export const TS = resolve(dirname(fileURLToPath(import.meta.url)), "..");
export const REPO = resolve(TS, "../..");
export const BIN = process.env.MSE_GRPC_BIN || join(REPO, "target/debug/mse-grpc");
const ARTIFACTS = join(REPO, "test-artifacts");

export { TaskState };

export function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once("error", rej);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

/** Polls `cond` (sync or async) until it returns a truthy value; returns that value. */
export async function until(cond, what, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let v;
    try {
      v = await cond();
    } catch {
      v = undefined;
    }
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * Starts `mse-grpc serve` on `port` (default: a free one), `--ephemeral` unless `dataDir`
 * is given; resolves once /healthz answers ok. Logs go to test-artifacts/sdk-ts-<name>.log.
 */
export async function startServer({ name = "server", port, dataDir, args = [] } = {}) {
  port ??= await freePort();
  mkdirSync(ARTIFACTS, { recursive: true });
  const logFile = join(ARTIFACTS, `sdk-ts-${name}.log`);
  const out = createWriteStream(logFile, { flags: "a" });
  const cwd = mkdtempSync(join(tmpdir(), "mse-sdk-ts-srv-"));
  const storage = dataDir ? ["--data-dir", dataDir] : ["--ephemeral"];
  const child = spawn(BIN, ["serve", ...storage, "--bind", `127.0.0.1:${port}`, ...args], {
    cwd,
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || "info" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  child.stdout.pipe(out);
  child.stderr.pipe(out);
  let exited = null;
  child.once("exit", (code, sig) => (exited = `exited with ${code ?? sig}`));
  child.once("error", (e) => (exited = `failed to start (${e.message})`));
  const base = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (exited) throw new Error(`server ${exited} before it was ready; see ${logFile}`);
    try {
      const r = await fetch(`${base}/healthz`, { signal: AbortSignal.timeout(1000) });
      if (r.status === 200 && (await r.text()).trim() === "ok") break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`server not healthy within 30 s; see ${logFile}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const gone = new Promise((r) => child.once("exit", r));
  const server = {
    base,
    port,
    logFile,
    child,
    /** SIGKILL: no drain, no goodbye. */
    async kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      await gone;
    },
    /** SIGTERM (SIGKILL after 8 s), then removes its working directory. */
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGTERM");
        const t = setTimeout(() => child.kill("SIGKILL"), 8000);
        await gone;
        clearTimeout(t);
      }
      rmSync(cwd, { recursive: true, force: true });
    },
  };
  return server;
}

/** A TaskService client over gRPC-Web (the package's Node transport). */
export function taskClient(base) {
  return createClient(TaskService, createTransport({ baseUrl: base }));
}

/** A Blueprint whose steps s1…sN are served by the operator seat `role`, in sequence (as tests/fixtures/operator.json). */
export function blueprint(id, role, steps, { hooks = true } = {}) {
  const refs = Array.from({ length: steps }, (_, i) => `s${i + 1}`);
  return {
    schema_version: "0.1.0",
    id,
    flow:
      steps === 1
        ? { kind: "step", ref: "s1", in: { op: "path", at: "$.input" }, out: { op: "path", at: "$.output" } }
        : {
            kind: "seq",
            children: refs.map((r, i) => ({
              kind: "step",
              ref: r,
              in: { op: "path", at: i === 0 ? "$.input" : `$.o${i}` },
              out: { op: "path", at: i === steps - 1 ? "$.output" : `$.o${i + 1}` },
            })),
          },
    agents: refs.map((name) => ({ name, kind: "operator", spec: { operator_ref: role } })),
    operators: [{ name: role, kind: hooks ? "main_ai" : "automate" }],
    // main_ai: hook_before / hook_after around each spawn; senior_escalation: a BLOCKED
    // submit asks the operator.
    ...(hooks ? { spawner_hints: { layers: ["main_ai", "senior_escalation"] } } : {}),
  };
}

/** Starts a task of an inline Blueprint; returns its id. */
export async function startTask(tasks, bp, initCtx = {}) {
  const r = await tasks.startTask({
    // google.protobuf.Struct fields take plain JSON objects.
    blueprint: { source: { case: "inline", value: bp } },
    initCtx,
  });
  return r.taskId;
}

/** Polls GetTask until the task is no longer RUNNING (server restarts are waited out). */
export async function finished(tasks, taskId, timeoutMs = 30_000) {
  return until(async () => {
    const { task } = await tasks.getTask({ taskId });
    return task && task.state !== TaskState.RUNNING && task.state !== TaskState.INTERRUPTED ? task : undefined;
  }, `task ${taskId} to finish`, timeoutMs);
}

export function output(task) {
  return valueToJson(task.finalCtx)?.output;
}

/** A promise with its resolver outside. */
export function gate() {
  let open;
  const promise = new Promise((r) => (open = r));
  return { promise, open };
}

/** A logger that keeps every line (and prints warnings and errors when DEBUG is set). */
export function captureLogger() {
  const lines = [];
  const at = (level) => (text) => {
    lines.push({ level, text });
    if (process.env.DEBUG) console.log(`${level}: ${text}`);
  };
  return { lines, logger: { debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") } };
}

/**
 * An interceptor that lets a test cut the operator's Subscribe stream (`cut()`), or refuse
 * new ones (`block(true)`) as a network outage would. Send and other calls pass.
 */
export function streamCutter() {
  let current;
  let blocked = false;
  const c = {
    subscribes: 0,
    interceptor: (next) => async (req) => {
      if (req.method.name !== "Subscribe") return next(req);
      if (blocked) throw new ConnectError("test: network down", Code.Unavailable);
      c.subscribes++;
      const ac = new AbortController();
      req.signal.addEventListener("abort", () => ac.abort(), { once: true });
      current = ac;
      return next({ ...req, signal: ac.signal });
    },
    cut: () => current?.abort(),
    block: (b) => (blocked = b),
  };
  return c;
}
