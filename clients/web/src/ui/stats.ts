// The live strip under the header: tasks in flight, tasks completed in the last minute and
// the operator backlog (pending requests, unacknowledged frames), from ServerService.GetStats
// polled every 2 s. A failed poll greys the strip out (logged once, never in the banner).

import { h } from "../dom";
import type { GetStatsResponse } from "@mlua-swarm/operator/gen/server_pb";
import { errorText, server } from "../rpc";
import type { Ctx } from "./context";

const POLL_MS = 2000;

type Field = "inFlight" | "completed" | "pending" | "unacked";

export class StatsStrip {
  readonly el: HTMLElement;
  private values: Record<Field, HTMLElement>;
  private timer?: ReturnType<typeof setTimeout>;
  private failing = "";

  constructor(private ctx: Ctx) {
    const value = (testid: string) => h("b", { testid }, "–");
    this.values = {
      inFlight: value("stats-in-flight"),
      completed: value("stats-completed"),
      pending: value("stats-pending"),
      unacked: value("stats-unacked"),
    };
    const item = (label: string, v: HTMLElement, title: string) => h("span", { class: "stat", title }, v, " ", label);
    this.el = h(
      "div",
      { class: "strip stale", testid: "stats", "aria-live": "polite" },
      item("in flight", this.values.inFlight, "task runs in flight now"),
      item("completed / min", this.values.completed, "tasks completed in the last 60 s"),
      item("pending requests", this.values.pending, "operator requests awaiting a reply, every session"),
      item("unacked frames", this.values.unacked, "frames sent to operators and not yet acknowledged"),
    );
  }

  start(): void {
    const loop = async () => {
      await this.refresh();
      this.timer = setTimeout(loop, POLL_MS);
    };
    void loop();
  }

  stop(): void {
    clearTimeout(this.timer);
  }

  private async refresh(): Promise<void> {
    try {
      this.show(await server.getStats({}));
      if (this.failing) this.ctx.log("ok", "GetStats works again");
      this.failing = "";
    } catch (e) {
      const text = errorText(e);
      if (text !== this.failing) this.ctx.log("warn", `GetStats failed (retrying): ${text}`);
      this.failing = text;
      this.el.classList.add("stale");
      this.el.title = `stale: ${text}`;
    }
  }

  private show(s: GetStatsResponse): void {
    this.values.inFlight.textContent = String(s.tasksInFlight);
    this.values.completed.textContent = String(s.tasksCompletedLastMinute);
    this.values.pending.textContent = String(s.operatorPendingRequests);
    this.values.unacked.textContent = String(s.operatorUnackedFrames);
    this.el.classList.remove("stale");
    this.el.title = `${s.operatorSessionsLive} operator session(s), ${s.operatorSessionsAttached} attached`;
  }
}
