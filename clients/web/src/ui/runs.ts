// A task's runs (its launch, then each resume or rerun), the Resume button of an
// INTERRUPTED task and the "Rerun from step" form of a finished or interrupted one.

import { clock, h, replace } from "../dom";
import { RunEnd, RunStart, TaskState, type Task, type TaskRun } from "@mlua-swarm/operator/gen/task_pb";
import { errorText, tasks, tsMillis } from "../rpc";
import type { Ctx } from "./context";
import { shortId } from "./frames";
import { blueprintRefs, mergeRefs } from "./steprefs";

const FINISHED = new Set([TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED, TaskState.INTERRUPTED]);

export function startName(s: RunStart): string {
  return (RunStart[s] ?? String(s)).replace(/^RUN_START_/, "").toLowerCase();
}

export function endName(e: RunEnd): string {
  return e === RunEnd.UNSPECIFIED ? "running" : (RunEnd[e] ?? String(e)).replace(/^RUN_END_/, "").toLowerCase();
}

export class RunsPanel {
  /** The history and the rerun form, for the task's details. */
  readonly el: HTMLElement;
  /** Shown on INTERRUPTED tasks only; the row puts it among its actions. */
  readonly resumeBtn: HTMLButtonElement;
  private list: HTMLOListElement;
  private rerunForm: HTMLElement;
  private stepSelect: HTMLSelectElement;
  private rerunBtn: HTMLButtonElement;
  private result: HTMLElement;
  private refs: string[] = [];

  constructor(
    private readonly ctx: Ctx,
    private readonly taskId: string,
    /** A resume or rerun was accepted: the task as the server returned it, RUNNING. */
    private readonly onRestarted: (t: Task) => void,
  ) {
    this.list = h("ol", { class: "runs", testid: "task-runs" });
    this.resumeBtn = h("button", { class: "btn tiny primary", type: "button", testid: "task-resume", hidden: true, title: "Continue the interrupted run from its journal" }, "resume");
    this.resumeBtn.addEventListener("click", () => void this.resume());
    this.stepSelect = h("select", { testid: "task-rerun-step", "aria-label": "step to rerun from" });
    this.rerunBtn = h("button", { class: "btn tiny", type: "button", testid: "task-rerun" }, "Rerun from step");
    this.rerunBtn.addEventListener("click", () => void this.rerun());
    this.result = h("span", { class: "result-line", testid: "task-run-result" });
    this.rerunForm = h("div", { class: "row rerun", hidden: true }, this.stepSelect, this.rerunBtn);
    this.el = h("div", { class: "runs-panel" }, h("h3", null, "Runs"), this.list, this.rerunForm, this.result);
    this.renderRefs();
  }

  update(t: Task): void {
    this.resumeBtn.hidden = t.state !== TaskState.INTERRUPTED;
    this.rerunForm.hidden = !FINISHED.has(t.state);
    replace(this.list, t.runs.length ? t.runs.map((r, i) => runItem(r, i)) : h("li", { class: "muted" }, "–"));
    if (!this.rerunForm.hidden) void this.loadRefs(t);
  }

  /** Agents the task's events show dispatched: step refs too. */
  addRefs(refs: Iterable<string>): void {
    if (mergeRefs(this.refs, refs)) this.renderRefs();
  }

  private async loadRefs(t: Task): Promise<void> {
    try {
      this.addRefs(await blueprintRefs(t));
    } catch (e) {
      this.ctx.log("warn", `GetBlueprint ${t.blueprintId}: ${errorText(e)} (rerun lists the steps seen in its events)`);
    }
  }

  private renderRefs(): void {
    const keep = this.stepSelect.value;
    replace(this.stepSelect, this.refs.length ? this.refs.map((r) => h("option", { value: r }, r)) : h("option", { value: "" }, "(no steps known)"));
    if (keep && this.refs.includes(keep)) this.stepSelect.value = keep;
    this.rerunBtn.disabled = this.refs.length === 0;
  }

  private async resume(): Promise<void> {
    await this.call("ResumeTask", this.resumeBtn, () => tasks.resumeTask({ taskId: this.taskId }), "resumed");
  }

  private async rerun(): Promise<void> {
    const step = this.stepSelect.value;
    if (!step) return this.ctx.error("RerunTask", new Error("pick a step to rerun from"));
    await this.call("RerunTask", this.rerunBtn, () => tasks.rerunTask({ taskId: this.taskId, fromStep: step }), `rerun from ${step}`);
  }

  private async call(what: string, btn: HTMLButtonElement, send: () => Promise<{ task?: Task }>, done: string): Promise<void> {
    btn.disabled = true;
    this.result.textContent = "";
    try {
      const r = await send();
      this.result.textContent = `${done}: ${shortId(this.taskId)} is running again`;
      this.result.className = "result-line ok";
      this.ctx.log("ok", `task ${this.taskId} ${done}`);
      if (r.task) this.onRestarted(r.task);
    } catch (e) {
      // The server's own words: FAILED_PRECONDITION (wrong state), INVALID_ARGUMENT (a step
      // the journal does not hold), …
      this.result.textContent = errorText(e);
      this.result.className = "result-line err";
      this.ctx.error(`${what} ${shortId(this.taskId)}`, e);
    } finally {
      btn.disabled = false;
      this.renderRefs(); // Rerun stays disabled while no step is known
    }
  }
}

function runItem(r: TaskRun, i: number): HTMLElement {
  const start = startName(r.start);
  const end = endName(r.end);
  const at = (t: number | undefined) => (t === undefined ? "" : clock(new Date(t)));
  return h(
    "li",
    { testid: "task-run", data: { start, end, fromStep: r.fromStep, replayed: String(r.replayedSteps) } },
    h("span", { class: "run-n" }, `#${i + 1}`),
    " ",
    h("span", { class: `chip run-start ${start}` }, r.fromStep ? `${start} from ${r.fromStep}` : start),
    " ",
    h("time", null, at(tsMillis(r.startedAt))),
    " → ",
    h("span", { class: `run-end ${end}`, testid: "task-run-end" }, end),
    r.endedAt ? [" ", h("time", null, at(tsMillis(r.endedAt)))] : null,
    r.replayedSteps > 0n ? h("span", { class: "muted" }, ` · ${r.replayedSteps} step(s) from the journal`) : null,
  );
}
