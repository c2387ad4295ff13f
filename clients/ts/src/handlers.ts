// The handler API of the Operator (what users write) and how each request's reply is made
// from a handler's result: a throwing handler becomes a rejection, a failed spawn or an
// error answer, never an exception that escapes.

import { create, type JsonValue } from "@bufbuild/protobuf";
import {
  AnswerSchema,
  HookAckSchema,
  NoticeCode,
  SpawnAckSchema,
  type Ask,
  type Cancel,
  type ClientFrame,
  type HookAfter,
  type HookBefore,
  type Spawn,
  type Welcome,
} from "./gen/mlua_swarm/v1/operator_pb.js";
import type { ConnState, LinkSession, LogLevel } from "./link.js";
import { errorText, jsonToValue, valueToJson } from "./rpc.js";
import type { Worker } from "./worker.js";

/** Where log lines go (default: `console`, without debug lines). */
export type Logger = { [L in LogLevel]?: (text: string) => void };

/** What every handler gets besides its frame. */
export interface HandlerContext {
  /** The frame's seq (the first one, if the request came again). */
  seq: number;
  /** Aborted when the request is withdrawn (`cancel`), voided by a server restart, or the operator stops. */
  signal: AbortSignal;
  /** The session's epoch when the frame arrived. */
  epoch: number;
}

/** A hook verdict: approve (`ok: true`) or reject with a reason (it becomes the task's error). */
export interface HookVerdict {
  ok: boolean;
  reason?: string;
}

/** An `ask` with its question as plain JSON. */
export type AskRequest = Omit<Ask, "question" | "$typeName"> & { question: JsonValue };

/** A `hook_after` with its result as plain JSON. */
export type HookAfterInfo = Omit<HookAfter, "result" | "$typeName"> & { result: JsonValue };

export type Maybe<T> = T | Promise<T>;

export interface Handlers {
  /** Approve or reject a spawn. No handler, `true` or nothing: approve. Throwing rejects with the error. */
  onHookBefore?(hook: HookBefore, ctx: HandlerContext): Maybe<HookVerdict | boolean | void>;
  /**
   * Run a spawned step: `worker` calls GetPrompt / Submit with the spawn's credentials.
   * The return value is the ack's value (used only if the worker submitted nothing);
   * throwing fails the step with the error's message.
   */
  onSpawn?(spawn: Spawn, worker: Worker, ctx: HandlerContext): Maybe<JsonValue | void>;
  /** Answer a question (a worker reported blocked). Throwing answers `{"error": message}`. */
  onAsk?(ask: AskRequest, ctx: HandlerContext): Maybe<JsonValue>;
  /** A spawn finished (informational). */
  onHookAfter?(info: HookAfterInfo, ctx: HandlerContext): Maybe<void>;
  /** A request was withdrawn; its handler's signal is aborted and its reply will not be sent. */
  onCancel?(cancel: Cancel, ctx: HandlerContext): Maybe<void>;
  /** A client frame was not used (a stream `notice`, or a Send outcome other than ACCEPTED). Default: a warning. */
  onNotice?(notice: OperatorNotice): void;
  /** Connection changes, welcomes (epoch, server restarts) and the end of the operator. */
  onEvent?(event: OperatorEvent): void;
  /** The resume state changed: keep it to resume the session after a process restart. */
  onSession?(session: LinkSession): void;
}

/** Short names of notice codes: DUPLICATE, STALE, UNKNOWN_REQ, WRONG_KIND, INVALID_FRAME, TOO_LARGE. */
export type NoticeName = keyof typeof NoticeCode;

export interface OperatorNotice {
  code: NoticeName;
  reqId: string;
  message: string;
  /** `stream`: a notice frame; `send`: the outcome of a Send. */
  source: "stream" | "send";
}

export type OperatorEvent =
  | { type: "state"; state: ConnState }
  | { type: "welcome"; sid: string; epoch: number; ackedSeq: number; replayed: number; serverRestarted: boolean; welcome: Welcome }
  | { type: "closed"; reason: string };

type Reply = ClientFrame["body"];

/** The `hook_ack` for a hook: no handler, `true` or nothing approve; a throw rejects. */
export async function hookReply(h: Handlers, hook: HookBefore, ctx: HandlerContext): Promise<Reply> {
  let verdict: HookVerdict;
  try {
    const v = await h.onHookBefore?.(hook, ctx);
    verdict = v === undefined || v === true ? { ok: true } : v === false ? { ok: false, reason: "rejected by the operator" } : v;
  } catch (err) {
    verdict = { ok: false, reason: errorText(err) };
  }
  return { case: "hookAck", value: create(HookAckSchema, { reqId: hook.reqId, ok: verdict.ok, reason: verdict.reason ?? "" }) };
}

/** The `spawn_ack` for a spawn: the handler's value, or its error (the step fails). */
export async function spawnReply(h: Handlers, spawn: Spawn, worker: Worker, ctx: HandlerContext, onError: (what: string, e: unknown) => void): Promise<Reply> {
  try {
    if (!h.onSpawn) throw new Error("this operator has no onSpawn handler");
    const v = await h.onSpawn(spawn, worker, ctx);
    return { case: "spawnAck", value: create(SpawnAckSchema, { reqId: spawn.reqId, value: v === undefined ? undefined : jsonToValue(v) }) };
  } catch (err) {
    onError(`spawn ${spawn.stepId} (${spawn.agent})`, err);
    return { case: "spawnAck", value: create(SpawnAckSchema, { reqId: spawn.reqId, ok: false, error: errorText(err) || "spawn failed" }) };
  }
}

/** The `answer` to an ask: the handler's value, or `{"error": message}`. */
export async function askReply(h: Handlers, ask: Ask, ctx: HandlerContext, onError: (what: string, e: unknown) => void): Promise<Reply> {
  const { $typeName: _, question, ...rest } = ask;
  let answer: JsonValue;
  try {
    if (!h.onAsk) throw new Error("this operator has no onAsk handler");
    answer = await h.onAsk({ ...rest, question: valueToJson(question) }, ctx);
  } catch (err) {
    onError(`ask ${ask.reqId}`, err);
    answer = { error: errorText(err) };
  }
  return { case: "answer", value: create(AnswerSchema, { reqId: ask.reqId, value: jsonToValue(answer ?? null) }) };
}

/** Runs `fn`; resolves with its error, or undefined. */
export async function settle(fn: () => Maybe<unknown>): Promise<unknown> {
  try {
    await fn();
    return undefined;
  } catch (e) {
    return e ?? new Error("handler threw");
  }
}

export function safe(fn: () => void, onError: (e: unknown) => void): void {
  try {
    fn();
  } catch (e) {
    onError(e);
  }
}

export function tooLarge(reqId: string, reply: ClientFrame["body"]): ClientFrame["body"] {
  const error = "the reply is over the server's data limit (--max-data-bytes)";
  return reply.case === "answer"
    ? { case: "answer", value: create(AnswerSchema, { reqId, value: jsonToValue({ error }) }) }
    : { case: "spawnAck", value: create(SpawnAckSchema, { reqId, ok: false, error }) };
}
