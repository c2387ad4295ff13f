// The package as a user gets it: `npm pack`, the tarball installed into a fresh npm
// project, and the operator at the top of README.md (extracted from it, not copied) serving
// a task against a real server.

import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { blueprint, finished, output, startServer, startTask, TaskState, taskClient, TS, until } from "./harness.mjs";

const npm = (args, cwd) => execFileSync("npm", [...args, "--no-audit", "--no-fund", "--loglevel=error"], { cwd, encoding: "utf8" });

test("npm pack → npm install into a fresh project → the README's operator serves a task", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "mse-sdk-ts-pack-"));
  const server = await startServer({ name: "pack" });
  let child;
  t.after(async () => {
    child?.kill("SIGTERM");
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const tarball = npm(["pack", "--pack-destination", dir], TS).trim().split("\n").pop();
  assert.match(tarball, /^mlua-swarm-operator-.*\.tgz$/);
  const app = join(dir, "app");
  execFileSync("mkdir", [app]);
  writeFileSync(join(app, "package.json"), JSON.stringify({ name: "readme-operator", private: true, type: "module" }));
  npm(["install", "--prefer-offline", join(dir, tarball)], app);

  const readme = readFileSync(join(TS, "README.md"), "utf8");
  const code = /```js\n([\s\S]*?)```/.exec(readme)?.[1];
  assert.ok(code && code.includes("new Operator("), "README starts with an operator in a js block");
  assert.ok(code.split("\n").length <= 20, "the README's operator is short");
  writeFileSync(join(app, "operator.mjs"), code);

  child = spawn(process.execPath, ["operator.mjs"], { cwd: app, env: { ...process.env, MSE_URL: server.base }, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout.on("data", (d) => (out += d));
  child.stderr.on("data", (d) => (out += d));
  let exited;
  child.once("exit", (c, s) => (exited = c ?? s));
  await until(() => {
    if (exited !== undefined) throw new Error(`the README operator exited (${exited}): ${out}`);
    return /serving as op-/.test(out);
  }, "the README operator to start", 20_000).catch((e) => {
    throw new Error(`${e.message}\n${out}`);
  });

  const tasks = taskClient(server.base);
  const task = await finished(tasks, await startTask(tasks, blueprint("readme", "remote", 1), { input: "hello" }));
  assert.equal(task.state, TaskState.COMPLETED, task.error);
  assert.equal(output(task), "echo: hello");
});
