// A server restart mid-flow: a durable server (--data-dir) is killed with SIGKILL while the
// SDK's spawn handler is inside step 2 of 3, and started again on the same data dir and
// port. The session survives, the run resumes, step 2 comes again as a new request.

import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { Operator } from "@mlua-swarm/operator";
import { blueprint, captureLogger, finished, gate, output, startServer, startTask, TaskState, taskClient, until } from "./harness.mjs";

test("a server killed mid-step: the run finishes, only the in-flight step is handled again (new req_id)", async (t) => {
  const dataDir = mkdtempSync(join(tmpdir(), "mse-sdk-ts-data-"));
  const first = await startServer({ name: "durable", dataDir });
  let second;
  t.after(async () => {
    await first.stop();
    await second?.stop();
    rmSync(dataDir, { recursive: true, force: true });
  });

  const spawns = [];
  const welcomes = [];
  const inside = gate();
  let voided;
  const log = captureLogger();
  const op = new Operator({
    baseUrl: first.base,
    roles: ["durable"],
    logger: log.logger,
    backoff: { baseMs: 100, capMs: 500 },
    onEvent: (e) => e.type === "welcome" && welcomes.push(e),
    onSpawn: async (spawn, worker, ctx) => {
      spawns.push({ agent: spawn.agent, reqId: spawn.reqId, stepId: spawn.stepId });
      if (spawns.length === 2) {
        // Step 2, first time: stay here until the SDK voids the request (the restart).
        inside.open();
        await new Promise((resolve) => ctx.signal.addEventListener("abort", resolve, { once: true }));
        voided = ctx.signal.reason?.message;
        throw ctx.signal.reason;
      }
      const p = await worker.getPrompt();
      await worker.submit(`done: ${p.prompt}`);
    },
  });
  t.after(() => op.stop());
  await op.start();

  const taskId = await startTask(taskClient(first.base), blueprint("three", "durable", 3, { hooks: false }), { input: "x" });
  await inside.promise;
  await first.kill();
  second = await startServer({ name: "durable-restarted", dataDir, port: first.port });

  const task = await finished(taskClient(second.base), taskId, 60_000);
  assert.equal(task.state, TaskState.COMPLETED, task.error);
  assert.equal(output(task), "done: done: done: x");

  assert.deepEqual(spawns.map((s) => s.agent), ["s1", "s2", "s2", "s3"], "only step 2 came twice");
  assert.notEqual(spawns[1].reqId, spawns[2].reqId, "step 2 came again with a new req_id");
  assert.equal(new Set(spawns.map((s) => s.reqId)).size, 4);
  assert.equal(voided, "server restarted", "the old step-2 handler was told");
  const restarted = welcomes.filter((w) => w.serverRestarted);
  assert.equal(restarted.length, 1, "one welcome said server_restarted");
  assert.ok(restarted[0].epoch > welcomes[0].epoch);
  assert.ok(log.lines.some((l) => l.level === "warn" && /server restarted/.test(l.text)));
  // Frames of the old process never come again: the acks move past them, no gap is left.
  await until(() => op.session.handled.length === 0 && op.session.acked >= 3, `everything acked (${JSON.stringify(op.session)})`);
});
