// The SDK against a real server: happy paths, a dropped stream mid-spawn, a hook
// rejection, an ask, and a stale reply.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Operator } from "@mlua-swarm/operator";
import { blueprint, captureLogger, finished, gate, output, startServer, startTask, streamCutter, TaskState, taskClient, until } from "./harness.mjs";

let server;
let tasks;

before(async () => {
  server = await startServer({ name: "operator" });
  tasks = taskClient(server.base);
});
after(async () => server?.stop());

/** Stops `op` when the running test ends, passed or not. */
function cleanup(t, op) {
  t.after(() => op.stop());
  return op;
}

/** An operator on `role` whose sub-agent echoes `done: <prompt>`; records what it saw. */
function echoOperator(role, extra = {}) {
  const seen = { hooks: [], spawns: [], after: [] };
  const log = captureLogger();
  const op = new Operator({
    baseUrl: server.base,
    roles: [role],
    logger: log.logger,
    backoff: { baseMs: 100, capMs: 1000 },
    onHookBefore: (h) => {
      seen.hooks.push(h.reqId);
      return { ok: true };
    },
    onSpawn: async (spawn, worker) => {
      seen.spawns.push({ reqId: spawn.reqId, stepId: spawn.stepId, agent: spawn.agent });
      const p = await worker.getPrompt();
      await worker.submit(`done: ${p.prompt}`);
    },
    onHookAfter: (info) => void seen.after.push(info.stepId),
    ...extra,
  });
  return { op, seen, log };
}

test("a one-step and a three-step task are served", async (t) => {
  const { op, seen, log } = echoOperator("happy");
  cleanup(t, op);
  await op.start();
  assert.match(op.session.sid, /^op-/);
  const one = await finished(tasks, await startTask(tasks, blueprint("one", "happy", 1), { input: "hi" }));
  assert.equal(one.state, TaskState.COMPLETED, one.error);
  assert.equal(output(one), "done: hi");
  const three = await finished(tasks, await startTask(tasks, blueprint("three", "happy", 3), { input: "x" }));
  assert.equal(three.state, TaskState.COMPLETED, three.error);
  assert.equal(output(three), "done: done: done: x");
  assert.deepEqual(seen.spawns.map((s) => s.agent), ["s1", "s1", "s2", "s3"]);
  assert.equal(seen.hooks.length, 4);
  await until(() => seen.after.length === 4, "4 hook_after frames");
  // Every frame handled is acked: hook_before, spawn, hook_after per step.
  await until(() => op.session.acked === 12, `acked 12 (is ${op.session.acked})`);
  assert.deepEqual(log.lines.filter((l) => l.level === "warn" || l.level === "error"), []);
  await op.stop();
});

test("a stream dropped while a spawn is in its handler: the spawn is handled once", async (t) => {
  const cutter = streamCutter();
  const inside = gate();
  const release = gate();
  const welcomes = [];
  const { op, seen, log } = echoOperator("dropped", {
    interceptors: [cutter.interceptor],
    onEvent: (e) => e.type === "welcome" && welcomes.push(e),
    onSpawn: async (spawn, worker) => {
      seen.spawns.push(spawn.reqId);
      inside.open();
      await release.promise;
      const p = await worker.getPrompt();
      await worker.submit(`done: ${p.prompt}`);
    },
  });
  cleanup(t, op);
  await op.start();
  const taskId = await startTask(tasks, blueprint("drop", "dropped", 1), { input: "survive" });
  await inside.promise;
  cutter.cut();
  // The new stream re-sends the spawn (not acked yet): the SDK keeps it for the running handler.
  await until(() => welcomes.length === 2, "a second welcome");
  assert.equal(welcomes[1].epoch, 2);
  assert.equal(welcomes[1].replayed, 1, "the unacked spawn is replayed");
  assert.equal(cutter.subscribes, 2);
  release.open();
  const task = await finished(tasks, taskId);
  assert.equal(task.state, TaskState.COMPLETED, task.error);
  assert.equal(output(task), "done: survive");
  assert.equal(seen.spawns.length, 1, "the spawn handler ran once");
  assert.ok(log.lines.some((l) => l.level === "warn" && /Subscribe dropped/.test(l.text)), "the drop is logged");
});

test("a hook rejection (a verdict, or a throwing handler) fails the task with the reason", async (t) => {
  let n = 0;
  const { op, seen } = echoOperator("rejecting", {
    onHookBefore: () => {
      n++;
      if (n === 1) return { ok: false, reason: "budget exhausted" };
      throw new Error("policy engine down");
    },
  });
  cleanup(t, op);
  await op.start();
  const first = await finished(tasks, await startTask(tasks, blueprint("rej", "rejecting", 1), { input: "x" }));
  assert.equal(first.state, TaskState.FAILED);
  assert.match(first.error, /budget exhausted/);
  const second = await finished(tasks, await startTask(tasks, blueprint("rej", "rejecting", 1), { input: "y" }));
  assert.equal(second.state, TaskState.FAILED);
  assert.match(second.error, /policy engine down/);
  assert.equal(seen.spawns.length, 0, "no spawn after a rejected hook");
});

test("a blocked worker makes the engine ask; the answer lands in the context", async (t) => {
  const asks = [];
  const { op } = echoOperator("asked", {
    onSpawn: async (_spawn, worker) => {
      await worker.submit("cannot do it", "blocked");
    },
    onAsk: (ask) => {
      asks.push(ask);
      return { advice: "proceed" };
    },
  });
  cleanup(t, op);
  await op.start();
  const task = await finished(tasks, await startTask(tasks, blueprint("ask", "asked", 1), { input: "hard job" }));
  assert.equal(task.state, TaskState.COMPLETED, task.error);
  assert.equal(asks.length, 1);
  assert.match(asks[0].taskId, /^task-/);
  assert.equal(output(task).senior_answer.advice, "proceed");
});

test("a stale reply surfaces as a warning and the operator keeps serving", async (t) => {
  const cutter = streamCutter();
  const inside = gate();
  const release = gate();
  const cancels = [];
  const { op, log } = echoOperator("stale", {
    interceptors: [cutter.interceptor],
    onSpawn: async (spawn, worker) => {
      if (spawn.agent === "s1" && cancels.length === 0 && !release.opened) {
        inside.open();
        await release.promise;
        return "too late";
      }
      const p = await worker.getPrompt();
      await worker.submit(`done: ${p.prompt}`);
    },
    onCancel: (c) => void cancels.push(c),
  });
  cleanup(t, op);
  await op.start();
  const taskId = await startTask(tasks, blueprint("stale", "stale", 1), { input: "x" });
  await inside.promise;
  // The network goes down, the task is cancelled meanwhile: the operator cannot hear the
  // cancel, so its reply goes out (Send) and is STALE.
  cutter.block(true);
  cutter.cut();
  await until(() => op.state.kind === "reconnecting", "the link to notice the drop");
  await tasks.cancelTask({ taskId, reason: "changed my mind" });
  const cancelled = await finished(tasks, taskId);
  assert.equal(cancelled.state, TaskState.CANCELLED);
  release.opened = true;
  release.open();
  await until(() => log.lines.some((l) => l.level === "warn" && /notice STALE/.test(l.text)), "a STALE warning");
  cutter.block(false);
  await until(() => cancels.length === 1, "the cancel frame after the reconnect");
  // Still serving.
  const next = await finished(tasks, await startTask(tasks, blueprint("stale", "stale", 1), { input: "again" }));
  assert.equal(next.state, TaskState.COMPLETED, next.error);
  assert.equal(output(next), "done: again");
  assert.ok(!log.lines.some((l) => l.level === "error"), JSON.stringify(log.lines.filter((l) => l.level === "error")));
});

test("a session the server refuses for good: start() rejects and the operator closes", async () => {
  const { op } = echoOperator("unused", { session: { sid: "op-00000000-0000-0000-0000-000000000000", token: "0".repeat(32) } });
  await assert.rejects(op.start(), /NOT_FOUND|UNAUTHENTICATED/);
  assert.match(await op.closed, /NOT_FOUND|UNAUTHENTICATED/);
  assert.equal(op.state.kind, "closed");
});

test("a second operator resumes the session from what onSession saved", async (t) => {
  let saved;
  const first = echoOperator("resumed", { onSession: (s) => (saved = structuredClone(s)) });
  cleanup(t, first.op);
  await first.op.start();
  const one = await finished(tasks, await startTask(tasks, blueprint("res", "resumed", 1), { input: "a" }));
  assert.equal(one.state, TaskState.COMPLETED, one.error);
  await until(() => saved?.acked === 3, "hook_before, spawn, hook_after acked and saved");
  await first.op.stop();

  const welcomes = [];
  const second = echoOperator("resumed", { session: saved, onEvent: (e) => e.type === "welcome" && welcomes.push(e) });
  cleanup(t, second.op);
  await second.op.start();
  assert.equal(welcomes[0].epoch, 2);
  assert.equal(welcomes[0].replayed, 0, "nothing handled comes again");
  const two = await finished(tasks, await startTask(tasks, blueprint("res", "resumed", 1), { input: "b" }));
  assert.equal(two.state, TaskState.COMPLETED, two.error);
  assert.equal(output(two), "done: b");
  assert.equal(first.seen.spawns.length + second.seen.spawns.length, 2);
});

test("pings are answered: a stream stays up past 3 ping intervals", async (t) => {
  const pinging = await startServer({ name: "pings", args: ["--ping-interval-secs", "1"] });
  t.after(() => pinging.stop());
  let pongs = 0;
  const welcomes = [];
  const op = new Operator({
    baseUrl: pinging.base,
    roles: ["pinged"],
    logger: null,
    interceptors: [
      (next) => async (req) => {
        if (req.method.name === "Send" && req.message.frame?.body.case === "pong") pongs++;
        return next(req);
      },
    ],
    onEvent: (e) => e.type === "welcome" && welcomes.push(e),
  });
  cleanup(t, op);
  await op.start();
  // The server closes a stream that sent nothing for 3 intervals; 4 pongs is past that.
  await until(() => pongs >= 4, "4 pongs", 15_000);
  assert.equal(welcomes.length, 1, "no reconnect");
  assert.equal(op.state.kind, "connected");
});

test("the browser build (connect-web, fetch) serves a task too", async (t) => {
  // What bundlers and browsers get (the package's default export condition); Node 20 has fetch.
  const web = await import("../dist/index.js");
  const seen = [];
  const op = new web.Operator({
    baseUrl: server.base,
    roles: ["fetched"],
    logger: null,
    onSpawn: async (spawn, worker) => {
      seen.push(spawn.reqId);
      const p = await worker.getPrompt();
      await worker.submit(`web: ${p.prompt}`);
    },
  });
  cleanup(t, op);
  await op.start();
  const task = await finished(tasks, await startTask(tasks, blueprint("web", "fetched", 1), { input: "hi" }));
  assert.equal(task.state, TaskState.COMPLETED, task.error);
  assert.equal(output(task), "web: hi");
  assert.equal(seen.length, 1);
});
