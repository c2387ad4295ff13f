// Center: the tasks, live. ListTasks is polled; tasks started here (and running ones found
// on load) are also followed with WatchTask, a few at a time (each watch holds one of the
// browser's ~6 HTTP/1.1 connections to this origin, and Subscribe holds another). Each
// task's details hold its runs, with Resume / Rerun from step (./runs).

import { duration, h, replace } from "../dom";
import { TaskState, type Task, type TaskEvent } from "@mlua-swarm/operator/gen/task_pb";
import { backoff } from "../operator";
import { Code, errorCode, errorText, pretty, tasks, tsMillis, valueToJson } from "../rpc";
import type { Ctx } from "./context";
import { shortId } from "./frames";
import { RunsPanel, startName } from "./runs";

const POLL_MS = 1500;
const MAX_WATCHES = 2;

interface Row {
  id: string;
  task?: Task;
  created: number;
  tr: HTMLTableRowElement;
  detailTr: HTMLTableRowElement;
  stateEl: HTMLElement;
  durEl: HTMLElement;
  stepsEl: HTMLElement;
  resultEl: HTMLElement;
  bpEl: HTMLElement;
  cancelBtn: HTMLButtonElement;
  finalPre: HTMLPreElement;
  eventsEl: HTMLOListElement;
  infoEl: HTMLElement;
  runs: RunsPanel;
  events: TaskEvent[];
  watching: boolean;
  watchRetries: number;
}

export function stateName(s: TaskState | undefined): string {
  return s === undefined ? "STARTING" : (TaskState[s] ?? String(s)).replace(/^TASK_STATE_/, "") || "UNSPECIFIED";
}

export class TasksView {
  readonly el: HTMLElement;
  private tbody: HTMLTableSectionElement;
  private empty: HTMLElement;
  private rows = new Map<string, Row>();
  private watchQueue: string[] = [];
  private watches = 0;
  private pollError = "";
  private pollFailures = 0;
  private pollTimer?: ReturnType<typeof setTimeout>;
  private stateFilter: HTMLSelectElement;

  constructor(private readonly ctx: Ctx) {
    this.tbody = h("tbody");
    this.empty = h("p", { class: "empty" }, "No tasks yet. Start one from a Blueprint on the left.");
    this.stateFilter = h(
      "select",
      { "aria-label": "filter by state", testid: "task-filter", onchange: () => this.applyFilter() },
      h("option", { value: "" }, "all states"),
      ["RUNNING", "INTERRUPTED", "COMPLETED", "FAILED", "CANCELLED"].map((s) => h("option", { value: s }, s.toLowerCase())),
    );
    this.el = h(
      "section",
      { class: "card tasks" },
      h(
        "header",
        { class: "card-head" },
        h("h2", null, "Tasks"),
        h("div", { class: "row" }, this.stateFilter, h("button", { class: "btn tiny ghost", type: "button", onclick: () => void this.refresh(true) }, "refresh")),
      ),
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { class: "task-table", testid: "task-table" },
          h("colgroup", null, ["c-task", "c-state", "c-dur", "c-steps", "c-result", "c-actions"].map((c) => h("col", { class: c }))),
          h("thead", null, h("tr", null, ["Task", "State", "Duration", "Steps", "Result", ""].map((c) => h("th", null, c)))),
          this.tbody,
        ),
        this.empty,
      ),
    );
  }

  start(): void {
    const loop = async () => {
      await this.refresh(false);
      this.pollTimer = setTimeout(loop, POLL_MS);
    };
    void loop();
  }

  stop(): void {
    clearTimeout(this.pollTimer);
  }

  /** A task started from this page: show it at once and follow it. */
  track(id: string): void {
    const row = this.row(id);
    row.created = Date.now();
    this.order();
    this.watch(id);
  }

  async refresh(manual: boolean): Promise<void> {
    try {
      const r = await tasks.listTasks({ limit: 100 });
      if (this.pollFailures) this.ctx.log("ok", "ListTasks works again");
      this.pollError = "";
      this.pollFailures = 0;
      for (const t of r.tasks) {
        const row = this.row(t.taskId);
        const was = row.task?.state;
        this.setTask(row, t);
        // Running tasks seen for the first time (e.g. after a reload), or running again
        // (resumed, rerun), are watched too.
        if (t.state === TaskState.RUNNING && was !== TaskState.RUNNING) this.watch(t.taskId);
      }
      this.order();
    } catch (e) {
      const text = errorText(e);
      this.pollFailures++;
      // Polling retries by itself: a single failure is a warning; a lasting one is an error,
      // reported once per distinct message rather than every tick.
      if (manual) this.ctx.error("ListTasks", e);
      else if (this.pollFailures === 1) this.ctx.log("warn", `ListTasks failed (retrying): ${text}`);
      else if (text !== this.pollError) this.ctx.error("ListTasks", e);
      if (this.pollFailures > 1) this.pollError = text;
    }
  }

  /** Updates running durations. */
  tick(): void {
    for (const r of this.rows.values()) this.renderDuration(r);
  }

  private row(id: string): Row {
    let r = this.rows.get(id);
    if (r) return r;
    const stateEl = h("span", { class: "state", testid: "task-state", data: { state: "STARTING" } }, "STARTING");
    const durEl = h("span", { class: "num", testid: "task-duration" }, "–");
    const stepsEl = h("span", { class: "num" }, "0");
    const resultEl = h("span", { class: "result", testid: "task-result" });
    const bpEl = h("span", { class: "bp" }, "");
    const cancelBtn = h("button", { class: "btn tiny danger", type: "button", testid: "task-cancel", hidden: true }, "cancel");
    const toggle = h("button", { class: "btn tiny ghost", type: "button", testid: "task-toggle", "aria-expanded": "false" }, "details");
    const finalPre = h("pre", { class: "final", testid: "task-final" }, "");
    const eventsEl = h("ol", { class: "events", testid: "task-events" });
    const infoEl = h("dl", { class: "kv compact" });
    const runs = new RunsPanel(this.ctx, id, (t) => {
      this.setTask(this.row(id), t);
      this.watch(id);
    });
    const detailTr = h(
      "tr",
      { class: "detail", hidden: true, data: { taskId: id } },
      h("td", { colspan: "6" }, h("div", { class: "detail-grid" }, h("div", null, h("h3", null, "Task"), infoEl, runs.el, h("h3", null, "Events"), eventsEl), h("div", null, h("h3", null, "Final context"), finalPre))),
    );
    const tr = h(
      "tr",
      { testid: "task-row", data: { taskId: id } },
      h("td", { class: "task-cell", title: id }, h("code", { testid: "task-id" }, shortId(id)), bpEl),
      h("td", null, stateEl),
      h("td", null, durEl),
      h("td", null, stepsEl),
      h("td", { class: "result-cell" }, resultEl),
      h("td", { class: "actions" }, toggle, cancelBtn, runs.resumeBtn),
    );
    toggle.addEventListener("click", () => {
      detailTr.hidden = !detailTr.hidden;
      toggle.setAttribute("aria-expanded", String(!detailTr.hidden));
      toggle.textContent = detailTr.hidden ? "details" : "hide";
      // A task that finished before this page watched it: WatchTask replays its events.
      const row = this.rows.get(id);
      if (!detailTr.hidden && row && !row.watching && row.events.length === 0) {
        row.watching = true;
        void this.follow(row, false).finally(() => (row.watching = false));
      }
    });
    cancelBtn.addEventListener("click", () => void this.cancel(id, cancelBtn));
    r = { id, created: 0, tr, detailTr, stateEl, durEl, stepsEl, resultEl, bpEl, cancelBtn, finalPre, eventsEl, infoEl, runs, events: [], watching: false, watchRetries: 0 };
    this.rows.set(id, r);
    this.tbody.append(tr, detailTr);
    this.empty.hidden = true;
    return r;
  }

  private setTask(r: Row, t: Task): void {
    r.task = t;
    r.created = tsMillis(t.createdAt) ?? r.created;
    const name = stateName(t.state);
    r.stateEl.textContent = name;
    r.stateEl.dataset.state = name;
    r.tr.dataset.state = name;
    r.bpEl.textContent = t.blueprintId;
    r.bpEl.title = t.boundVersion ? `version ${t.boundVersion}` : "inline Blueprint";
    r.stepsEl.textContent = String(t.stepIds.length);
    r.cancelBtn.hidden = t.state !== TaskState.RUNNING;
    r.runs.update(t);
    const final = valueToJson(t.finalCtx);
    if (t.state === TaskState.RUNNING) {
      r.resultEl.textContent = "";
      r.resultEl.title = "";
      r.resultEl.className = "result";
    } else if (t.state === TaskState.COMPLETED) {
      r.finalPre.textContent = pretty(final);
      const out = final && typeof final === "object" && !Array.isArray(final) && "output" in final ? final.output : final;
      r.resultEl.textContent = compact(out);
      r.resultEl.title = pretty(out);
      r.resultEl.className = "result";
    } else if (t.error) {
      r.finalPre.textContent = "";
      r.resultEl.textContent = t.error;
      r.resultEl.title = t.error;
      r.resultEl.className = t.state === TaskState.INTERRUPTED ? "result warn" : "result err";
    }
    replace(
      r.infoEl,
      [
        ["id", t.taskId],
        ["blueprint", t.blueprintId + (t.boundVersion ? ` @ ${t.boundVersion.slice(0, 12)}` : " (inline)")],
        ["operator", t.operatorSid || "–"],
        ["ttl", `${t.effectiveTtlSecs}s`],
        ["runs", t.runs.length ? `${t.runs.length} (engine run ${t.runs[0].runId})` : "–"],
        ["steps", t.stepIds.join(", ") || "–"],
      ].map(([k, v]) => [h("dt", null, k), h("dd", null, h("code", null, v))]),
    );
    this.renderDuration(r);
    this.applyFilterTo(r);
  }

  private renderDuration(r: Row): void {
    if (!r.created) return;
    // An INTERRUPTED task has no finished_at: its last run's end is where it stopped.
    const stopped = tsMillis(r.task?.finishedAt) ?? tsMillis(r.task?.runs.at(-1)?.endedAt);
    const end = stopped ?? (r.task && r.task.state !== TaskState.RUNNING ? r.created : Date.now());
    r.durEl.textContent = duration(end - r.created);
  }

  private order(): void {
    const sorted = [...this.rows.values()].sort((a, b) => b.created - a.created || (a.id < b.id ? -1 : 1));
    const want = sorted.flatMap((r) => [r.tr, r.detailTr]);
    const have = [...this.tbody.children];
    if (want.length === have.length && want.every((el, i) => el === have[i])) return;
    this.tbody.append(...want);
  }

  private applyFilter(): void {
    for (const r of this.rows.values()) this.applyFilterTo(r);
  }

  private applyFilterTo(r: Row): void {
    const f = this.stateFilter.value;
    const show = !f || r.tr.dataset.state === f;
    r.tr.hidden = !show;
    if (!show) r.detailTr.hidden = true;
  }

  private watch(id: string): void {
    const r = this.row(id);
    if (r.watching || this.watchQueue.includes(id)) return;
    this.watchQueue.push(id);
    this.pump();
  }

  private pump(): void {
    while (this.watches < MAX_WATCHES && this.watchQueue.length) {
      const id = this.watchQueue.shift()!;
      const r = this.row(id);
      if (r.task && r.task.state !== TaskState.RUNNING) continue;
      this.watches++;
      r.watching = true;
      void this.follow(r).finally(() => {
        r.watching = false;
        this.watches--;
        this.pump();
      });
    }
  }

  /** Streams the task's events; `live`: it was running, so read and announce its end. */
  private async follow(r: Row, live = true): Promise<void> {
    let terminal = false;
    try {
      for await (const { event } of tasks.watchTask({ taskId: r.id })) {
        if (!event) continue;
        if (r.events.some((e) => e.seq === event.seq)) continue;
        r.events.push(event);
        r.eventsEl.append(h("li", null, h("time", null, new Date(tsMillis(event.at) ?? Date.now()).toLocaleTimeString([], { hour12: false })), " ", describe(event)));
        const k = event.kind;
        if (k.case === "stepDispatched") {
          r.stepsEl.textContent = String(r.events.filter((e) => e.kind.case === "stepDispatched").length);
          r.runs.addRefs([k.value.agent]);
        }
        // A rerun or resume follows an end: only the last event says whether it ended.
        terminal = k.case === "completed" || k.case === "failed" || k.case === "cancelled";
      }
    } catch (e) {
      const code = errorCode(e);
      if (live && !terminal && code !== Code.NotFound && code !== Code.InvalidArgument) {
        // A dropped watch of a running task is retried; ListTasks keeps its state meanwhile.
        r.watchRetries++;
        const inMs = backoff(r.watchRetries);
        this.ctx.log("warn", `WatchTask ${shortId(r.id)} dropped (${errorText(e)}); again in ${(inMs / 1000).toFixed(1)}s`);
        setTimeout(() => this.watch(r.id), inMs);
      } else {
        this.ctx.error(`WatchTask ${shortId(r.id)}`, e);
      }
    }
    if (terminal && live) {
      try {
        const got = await tasks.getTask({ taskId: r.id });
        if (got.task) this.setTask(r, got.task);
        this.ctx.log(got.task?.state === TaskState.COMPLETED ? "ok" : "warn", `task ${r.id} ${stateName(got.task?.state)}`);
      } catch (e) {
        this.ctx.error(`GetTask ${shortId(r.id)}`, e);
      }
    }
  }

  private async cancel(id: string, btn: HTMLButtonElement): Promise<void> {
    const reason = prompt(`Cancel ${id}? Reason:`, "cancelled from the console");
    if (reason === null) return;
    btn.disabled = true;
    try {
      const r = await tasks.cancelTask({ taskId: id, reason });
      if (r.task) this.setTask(this.row(id), r.task);
      this.ctx.log("warn", `task ${id} cancelled`);
    } catch (e) {
      this.ctx.error("CancelTask", e);
    } finally {
      btn.disabled = false;
    }
  }
}

function describe(e: TaskEvent): string {
  const k = e.kind;
  switch (k.case) {
    case "started":
      return `started ${k.value.blueprintId}`;
    case "stepDispatched":
      return `step ${k.value.stepId} dispatched to ${k.value.agent}`;
    case "stepFinished":
      return `step ${k.value.stepId} ${k.value.ok ? "passed" : "blocked/failed"}: ${compact(valueToJson(k.value.result))}`;
    case "completed":
      return "completed";
    case "failed":
      return `failed: ${k.value.error}`;
    case "cancelled":
      return `cancelled: ${k.value.reason}`;
    case "interrupted":
      return `interrupted: ${k.value.reason}`;
    case "runStarted": {
      const v = k.value;
      const from = v.fromStep ? ` from ${v.fromStep}` : "";
      return `run started (${startName(v.start)}${from}), ${v.replayedSteps} step(s) from the journal`;
    }
    default:
      return "(unknown event)";
  }
}

function compact(v: unknown): string {
  const s = typeof v === "string" ? v : JSON.stringify(v ?? null);
  return s.length > 120 ? `${s.slice(0, 119)}…` : s;
}
