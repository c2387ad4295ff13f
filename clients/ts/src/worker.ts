// What a spawn hands to its sub-agent: WorkerService calls made with the spawn's own
// credential (the short `wh-…` worker handle).

import type { JsonValue } from "@bufbuild/protobuf";
import type { Client } from "@connectrpc/connect";
import type { Spawn } from "./gen/mlua_swarm/v1/operator_pb.js";
import { SubmitOutcome, type GetPromptResponse, type WorkerService } from "./gen/mlua_swarm/v1/worker_pb.js";
import { bearer, jsonToValue } from "./rpc.js";

export { SubmitOutcome };

/** How a worker ends its step: `pass` (default), `blocked` (the engine asks the operator) or `skip`. */
export type Outcome = "pass" | "blocked" | "skip" | SubmitOutcome;

const OUTCOMES: Record<string, SubmitOutcome> = {
  pass: SubmitOutcome.PASS,
  blocked: SubmitOutcome.BLOCKED,
  skip: SubmitOutcome.SKIP,
};

/** The prompt of a step, as `GetPrompt` returns it. */
export type Prompt = GetPromptResponse;

/** A ready sub-agent client for one spawned step. */
export class Worker {
  /** The step this worker serves (`ST-…`). */
  readonly stepId: string;

  constructor(
    private readonly spawn: Spawn,
    private readonly workers: Client<typeof WorkerService>,
    private readonly signal?: AbortSignal,
    private readonly headers?: Record<string, string>,
  ) {
    this.stepId = spawn.stepId;
  }

  /** The credential the calls carry (the worker handle, else the capability token). */
  get credential(): string {
    return this.spawn.workerHandle || this.spawn.capabilityToken;
  }

  /** The step's prompt and rendered system prompt. */
  getPrompt(): Promise<Prompt> {
    return this.workers.getPrompt({ stepId: this.stepId }, this.opts());
  }

  /** Submits the step's result as text (trailing whitespace is trimmed by the server). */
  async submit(body: string, outcome: Outcome = "pass"): Promise<void> {
    const o = typeof outcome === "string" ? OUTCOMES[outcome] : outcome;
    if (o === undefined) throw new Error(`unknown outcome ${String(outcome)}: pass, blocked or skip`);
    await this.workers.submit({ body, outcome: o, stepId: this.stepId }, this.opts());
  }

  /** Submits the step's result as a JSON value (uses the capability token). */
  async postResult(value: JsonValue, ok = true): Promise<void> {
    await this.workers.postResult(
      { stepId: this.stepId, value: jsonToValue(value), ok },
      bearer(this.spawn.capabilityToken, this.signal, this.headers),
    );
  }

  private opts() {
    const o = bearer(this.credential, this.signal, this.headers);
    return this.spawn.traceparent ? { ...o, headers: { ...o.headers, traceparent: this.spawn.traceparent } } : o;
  }
}
