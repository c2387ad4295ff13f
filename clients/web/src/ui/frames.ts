// Right column: the request frames waiting for this operator (hook_before, spawn, ask), each
// with its reply controls. A card leaves once its reply was taken (or its request withdrawn).

import { create } from "@bufbuild/protobuf";
import { copyButton, duration, h, truncate, type Child } from "../dom";
import {
  AnswerSchema,
  HookAckSchema,
  SendOutcome,
  SpawnAckSchema,
  type Ask,
  type ClientFrame,
  type HookBefore,
  type ServerFrame,
  type Spawn,
} from "@mlua-swarm/operator/gen/operator_pb";
import { jsonToValue, parseJson, pretty, valueToJson } from "../rpc";
import type { Ctx } from "./context";

interface Card {
  seq: number;
  reqId: string;
  el: HTMLElement;
  deadline: number;
  deadlineEl: HTMLElement;
}

export class FramesView {
  readonly el: HTMLElement;
  private list: HTMLElement;
  private empty: HTMLElement;
  private count: HTMLElement;
  private cards = new Map<number, Card>();

  constructor(private readonly ctx: Ctx) {
    this.count = h("span", { class: "count", testid: "pending-count" }, "0");
    this.empty = h("p", { class: "empty" }, "Nothing waiting. Hooks, spawns and asks for this session appear here.");
    this.list = h("div", { class: "frames", testid: "pending-frames" }, this.empty);
    this.el = h("section", { class: "card" }, h("header", { class: "card-head" }, h("h2", null, "Pending frames ", this.count)), this.list);
  }

  has(seq: number): boolean {
    return this.cards.has(seq);
  }

  add(f: ServerFrame): void {
    const seq = Number(f.seq);
    if (this.cards.has(seq)) return;
    let card: Card;
    switch (f.body.case) {
      case "hookBefore":
        card = this.hookCard(seq, f.body.value);
        break;
      case "spawn":
        card = this.spawnCard(seq, f.body.value);
        break;
      case "ask":
        card = this.askCard(seq, f.body.value);
        break;
      default:
        return;
    }
    this.cards.set(seq, card);
    // Oldest first: the order the engine asked in.
    const after = [...this.cards.values()].filter((c) => c.seq > seq).sort((a, b) => a.seq - b.seq)[0];
    this.list.insertBefore(card.el, after ? after.el : null);
    this.sync();
    this.tick();
  }

  /** Removes the card of a withdrawn request; returns its seq. */
  withdraw(reqId: string): number | undefined {
    for (const c of this.cards.values()) {
      if (c.reqId === reqId) {
        this.remove(c.seq);
        return c.seq;
      }
    }
    return undefined;
  }

  /** Drops every card up to `seq` (acknowledged elsewhere). */
  dropUpTo(seq: number): void {
    for (const s of [...this.cards.keys()]) if (s <= seq) this.remove(s);
  }

  clear(): void {
    for (const s of [...this.cards.keys()]) this.remove(s);
  }

  /** Updates the deadline countdowns. */
  tick(): void {
    const now = Date.now();
    for (const c of this.cards.values()) {
      if (!c.deadline) continue;
      const left = c.deadline - now;
      c.deadlineEl.textContent = left > 0 ? `expires in ${duration(left)}` : "expired";
      c.deadlineEl.classList.toggle("urgent", left < 60_000);
    }
  }

  private remove(seq: number): void {
    this.cards.get(seq)?.el.remove();
    this.cards.delete(seq);
    this.sync();
  }

  private sync(): void {
    this.count.textContent = String(this.cards.size);
    this.empty.hidden = this.cards.size > 0;
  }

  private shell(kind: string, title: string, seq: number, reqId: string, taskId: string, deadlineMs: bigint, ...body: Child[]): Card {
    const deadlineEl = h("span", { class: "deadline" });
    const el = h(
      "article",
      { class: `frame ${kind}`, testid: `frame-${kind}`, data: { seq: String(seq), reqId, taskId } },
      h("header", null, h("span", { class: `kind ${kind}` }, kind.replace("-", "_")), h("strong", null, title), h("span", { class: "seq" }, `seq ${seq}`)),
      h("div", { class: "meta" }, h("span", { title: taskId }, "task ", h("code", null, shortId(taskId))), deadlineEl),
      body,
    );
    return { seq, reqId, el, deadline: Number(deadlineMs), deadlineEl };
  }

  /** Sends a reply for card `seq`, keeping the card if the reply was not taken. */
  private async reply(seq: number, what: string, body: ClientFrame["body"], buttons: HTMLButtonElement[]): Promise<void> {
    const link = this.ctx.link();
    if (!link) return this.ctx.error(what, new Error("no open session"));
    buttons.forEach((b) => (b.disabled = true));
    try {
      const r = await link.reply(seq, body);
      const outcome = SendOutcome[r.outcome];
      const detail = r.message ? `: ${r.message}` : "";
      if (r.outcome === SendOutcome.ACCEPTED) {
        this.ctx.log("ok", `${what} (seq ${seq}) accepted${detail}`);
        this.remove(seq);
      } else if (r.outcome === SendOutcome.WRONG_KIND || r.outcome === SendOutcome.UNSPECIFIED) {
        this.ctx.error(what, new Error(`${outcome}${detail}`));
        buttons.forEach((b) => (b.disabled = false));
      } else {
        // DUPLICATE / STALE / UNKNOWN: nothing left to do for this frame.
        this.ctx.log("warn", `${what} (seq ${seq}): ${outcome}${detail}`);
        this.remove(seq);
      }
    } catch (e) {
      this.ctx.error(what, e);
      buttons.forEach((b) => (b.disabled = false));
    }
  }

  private hookCard(seq: number, f: HookBefore): Card {
    const reason = h("input", { type: "text", placeholder: "reason (for reject)", testid: "hook-reason", "aria-label": "reject reason" });
    const approve = h("button", { class: "btn primary", type: "button", testid: "hook-approve" }, "Approve");
    const reject = h("button", { class: "btn danger", type: "button", testid: "hook-reject" }, "Reject");
    const buttons = [approve, reject];
    approve.addEventListener("click", () =>
      void this.reply(seq, `approve ${f.agent}`, { case: "hookAck", value: create(HookAckSchema, { reqId: f.reqId, ok: true }) }, buttons),
    );
    reject.addEventListener("click", () =>
      void this.reply(seq, `reject ${f.agent}`, { case: "hookAck", value: create(HookAckSchema, { reqId: f.reqId, ok: false, reason: reason.value.trim() }) }, buttons),
    );
    return this.shell(
      "hook-before",
      `spawn ${f.agent}?`,
      seq,
      f.reqId,
      f.taskId,
      f.deadlineUnixMs,
      fields([
        ["step", h("code", { testid: "hook-step-id" }, f.stepId)],
        ["agent", f.agent],
        ["attempt", String(f.attempt)],
      ]),
      h("div", { class: "row" }, approve, reason, reject),
    );
  }

  private spawnCard(seq: number, f: Spawn): Card {
    const onCopyError = (e: unknown) => this.ctx.error("copy", e);
    const value = h("textarea", { rows: 2, placeholder: "optional result JSON (used only if the worker submitted nothing)", testid: "spawn-value", spellcheck: "false" });
    const error = h("input", { type: "text", placeholder: "error (fails the step)", testid: "spawn-error", "aria-label": "spawn error" });
    const ack = h("button", { class: "btn primary", type: "button", testid: "ack-spawn" }, "Ack spawn");
    const fail = h("button", { class: "btn danger", type: "button", testid: "fail-spawn" }, "Fail");
    const buttons = [ack, fail];
    ack.addEventListener("click", () => {
      let v;
      try {
        const j = parseJson(value.value, "result value", null);
        v = j === null ? undefined : jsonToValue(j);
      } catch (e) {
        return this.ctx.error("Ack spawn", e);
      }
      void this.reply(seq, `ack spawn of ${f.agent}`, { case: "spawnAck", value: create(SpawnAckSchema, { reqId: f.reqId, value: v }) }, buttons);
    });
    fail.addEventListener("click", () => {
      const msg = error.value.trim() || "failed by the operator";
      void this.reply(seq, `fail spawn of ${f.agent}`, { case: "spawnAck", value: create(SpawnAckSchema, { reqId: f.reqId, ok: false, error: msg }) }, buttons);
    });
    return this.shell(
      "spawn",
      `run ${f.agent}`,
      seq,
      f.reqId,
      f.taskId,
      f.deadlineUnixMs,
      fields([
        ["step", h("span", null, h("code", { testid: "spawn-step-id" }, f.stepId), copyButton(() => f.stepId, "copy", onCopyError))],
        ["handle", h("span", null, h("code", { testid: "spawn-worker-handle" }, f.workerHandle), copyButton(() => f.workerHandle, "copy", onCopyError))],
        ["token", h("span", null, h("code", { testid: "spawn-capability", title: "capability token (signed, TTL-bound)" }, truncate(f.capabilityToken, 8)), copyButton(() => f.capabilityToken, "copy", onCopyError))],
        ["attempt", String(f.attempt)],
      ]),
      h("details", { class: "directive" }, h("summary", null, "directive for the sub-agent"), h("pre", { testid: "spawn-directive" }, f.directive)),
      value,
      h("div", { class: "row" }, ack, error, fail),
    );
  }

  private askCard(seq: number, f: Ask): Card {
    const answer = h("textarea", { rows: 3, placeholder: '"your answer" or any JSON', testid: "ask-answer", spellcheck: "false" });
    const send = h("button", { class: "btn primary", type: "button", testid: "ask-submit" }, "Answer");
    send.addEventListener("click", () => {
      let v;
      try {
        v = jsonToValue(parseJson(answer.value, "answer"));
      } catch (e) {
        return this.ctx.error("Answer", e);
      }
      void this.reply(seq, "answer", { case: "answer", value: create(AnswerSchema, { reqId: f.reqId, value: v }) }, [send]);
    });
    return this.shell(
      "ask",
      "question",
      seq,
      f.reqId,
      f.taskId,
      f.deadlineUnixMs,
      fields([["step", h("code", null, f.stepId)]]),
      h("pre", { class: "question", testid: "ask-question" }, pretty(valueToJson(f.question))),
      answer,
      h("div", { class: "row" }, send),
    );
  }
}

function fields(rows: [string, Child][]): HTMLElement {
  return h("dl", { class: "kv compact" }, rows.map(([k, v]) => [h("dt", null, k), h("dd", null, v)]));
}

export function shortId(id: string): string {
  const m = /^([a-z]+-)([0-9a-f]{8})[0-9a-f-]*$/i.exec(id);
  return m ? `${m[1]}${m[2]}…` : id;
}
