// The browser door of the operator protocol: one Subscribe stream (server frames) plus
// unary Send calls (client frames), resumable across reconnects, page reloads and server
// restarts. The Operator (operator.ts) and the browser console are both built on it.
//
// Bookkeeping: the owner calls `markHandled(seq)` once a frame needs nothing more (a request
// answered or withdrawn, an informational frame processed). Acks are cumulative, so the link
// acks the highest seq up to which *every* frame was handled and remembers handled frames
// above it. Subscribe resumes with `last_seq` = that ack, so frames not handled yet come
// again after a reconnect; the link hands each seq to its owner once per server life.

import { create } from "@bufbuild/protobuf";
import type { Client } from "@connectrpc/connect";
import {
  AckSchema,
  ClientFrameSchema,
  PongSchema,
  SendOutcome,
  type ClientFrame,
  type OperatorService,
  type SendResponse,
  type ServerFrame,
  type Welcome,
} from "./gen/mlua_swarm/v1/operator_pb.js";
import { backoff, bearer, Code, DEFAULT_BACKOFF, errorCode, errorText, type Backoff } from "./rpc.js";

/** What a link needs to resume: the session's credentials and how far its frames were handled. */
export interface LinkSession {
  sid: string;
  token: string;
  /** Highest seq acknowledged (every frame up to it was handled). Sent as Subscribe.last_seq. */
  acked: number;
  /** Seqs above `acked` already handled, waiting for an earlier one to be handled first. */
  handled: number[];
}

export type ConnState =
  | { kind: "idle" }
  | { kind: "connecting"; attempt: number }
  | { kind: "connected"; epoch: number }
  | { kind: "reconnecting"; attempt: number; inMs: number; reason: string }
  | { kind: "closed"; reason: string };

export type LogLevel = "debug" | "info" | "warn" | "error";

export interface LinkEvents<S extends LinkSession = LinkSession> {
  state(s: ConnState): void;
  welcome(w: Welcome): void;
  /** A request or info frame (seq > 0) not handled yet; each seq once per server life. */
  frame(f: ServerFrame): void;
  /** notice / closing (pings are answered here). */
  control(f: ServerFrame): void;
  /** Everything up to `seq` is acknowledged (by us or, seen in welcome, by another client). */
  acked(seq: number): void;
  /** The session's resume state changed (persist it to survive a reload or a restart). */
  persist?(s: S): void;
  log(level: LogLevel, text: string): void;
}

export interface LinkOptions {
  /** Reconnect delays (default 0.25–0.5 s, doubling, capped at 15 s). */
  backoff?: Partial<Backoff>;
  /** Headers added to Subscribe and Send (e.g. the API token's). */
  headers?: Record<string, string>;
}

/** Statuses after which retrying the same Subscribe cannot help. */
const FATAL = new Set<Code>([Code.Unauthenticated, Code.NotFound, Code.InvalidArgument, Code.PermissionDenied]);

export class OperatorLink<S extends LinkSession = LinkSession> {
  state: ConnState = { kind: "idle" };
  epoch = 0;
  private handled: Set<number>;
  private seen = new Set<number>();
  private stopped = true;
  private abort?: AbortController;
  private retryTimer?: ReturnType<typeof setTimeout>;
  private watchdog?: ReturnType<typeof setInterval>;
  private lastFrameAt = 0;
  private stallMs = 45_000;
  private attempt = 0;
  private generation = 0;
  /** Set by a `server_restarted` welcome: the next frame's seq fixes the ack floor. */
  private afterRestart = false;
  private readonly backoff: Backoff;
  private readonly headers?: Record<string, string>;

  constructor(
    readonly session: S,
    private readonly operators: Client<typeof OperatorService>,
    private readonly ev: LinkEvents<S>,
    opts: LinkOptions = {},
  ) {
    this.handled = new Set(session.handled.filter((s) => s > session.acked));
    this.backoff = { ...DEFAULT_BACKOFF, ...opts.backoff };
    this.headers = opts.headers;
  }

  get acked(): number {
    return this.session.acked;
  }

  get running(): boolean {
    return !this.stopped;
  }

  start(): void {
    this.stopped = false;
    this.attempt = 0;
    void this.run();
  }

  /** Ends the stream for good (until start()). */
  stop(reason: string): void {
    this.stopped = true;
    this.generation++;
    clearTimeout(this.retryTimer);
    clearInterval(this.watchdog);
    this.abort?.abort();
    this.setState({ kind: "closed", reason });
  }

  /** Drops the current stream (if any) and subscribes again at once. */
  reconnectNow(): void {
    this.stop("reconnecting");
    this.start();
  }

  private setState(s: ConnState): void {
    this.state = s;
    this.ev.state(s);
  }

  private async run(): Promise<void> {
    const gen = ++this.generation;
    clearTimeout(this.retryTimer);
    const ac = new AbortController();
    this.abort = ac;
    this.setState({ kind: "connecting", attempt: this.attempt });
    let closing: { reason: string; retryAfterMs: number } | undefined;
    let failure: unknown;
    let stalled = false;
    try {
      const stream = this.operators.subscribe(
        { sid: this.session.sid, lastSeq: BigInt(this.session.acked) },
        bearer(this.session.token, ac.signal, this.headers),
      );
      for await (const f of stream) {
        if (gen !== this.generation) return;
        this.lastFrameAt = Date.now();
        const body = f.body;
        switch (body.case) {
          case "welcome":
            this.onWelcome(body.value, () => {
              stalled = true;
              ac.abort();
            });
            break;
          case "ping":
            this.pong(body.value.nonce);
            break;
          case "closing":
            closing = { reason: body.value.reason, retryAfterMs: Number(body.value.retryAfterMs) };
            this.ev.control(f);
            break;
          case "notice":
            this.ev.control(f);
            break;
          case undefined:
            this.ev.log("warn", `empty server frame (seq ${f.seq})`);
            break;
          default:
            this.onRequest(f);
        }
      }
    } catch (e) {
      failure = e;
    }
    clearInterval(this.watchdog);
    if (gen !== this.generation || this.stopped) return;

    if (closing && closing.retryAfterMs === 0) {
      this.stopped = true;
      this.setState({ kind: "closed", reason: closing.reason || "closed by the server" });
      return;
    }
    const code = errorCode(failure);
    if (failure !== undefined && !stalled && code !== undefined && FATAL.has(code)) {
      this.stopped = true;
      this.ev.log("error", `Subscribe: ${errorText(failure)}`);
      this.setState({ kind: "closed", reason: errorText(failure) });
      return;
    }
    const reason = stalled
      ? "no frame from the server for too long"
      : closing
        ? `server closed the stream: ${closing.reason}`
        : failure !== undefined
          ? errorText(failure)
          : "stream ended";
    const inMs = closing ? Math.max(closing.retryAfterMs, 100) : backoff(this.attempt, this.backoff);
    this.attempt++;
    // A drop that is retried is a warning; what cannot be retried is an error (above).
    this.ev.log("warn", `Subscribe dropped (${reason}); reconnecting in ${(inMs / 1000).toFixed(1)}s`);
    this.setState({ kind: "reconnecting", attempt: this.attempt, inMs, reason });
    this.retryTimer = setTimeout(() => {
      if (!this.stopped && gen === this.generation) void this.run();
    }, inMs);
  }

  private onRequest(f: ServerFrame): void {
    const seq = Number(f.seq);
    if (this.afterRestart) {
      // Frames of the previous server process are void and never come again: the first
      // frame of the new one is where handling continues, so every seq below it counts as
      // handled (or the cumulative ack would wait for them for ever).
      this.afterRestart = false;
      if (seq - 1 > this.session.acked) this.advanceTo(seq - 1);
    }
    if (seq <= this.session.acked || this.handled.has(seq) || this.seen.has(seq)) return;
    this.seen.add(seq);
    this.ev.frame(f);
  }

  private onWelcome(w: Welcome, stall: () => void): void {
    this.attempt = 0;
    this.epoch = Number(w.epoch);
    if (w.serverRestarted) {
      // What the old process sent is void: forget it, so new frames (whatever their seqs)
      // are handed over.
      this.afterRestart = true;
      this.seen.clear();
      this.handled.clear();
      this.persist();
    }
    const serverAcked = Number(w.ackedSeq);
    if (serverAcked > this.session.acked) {
      // Another client acknowledged further: those frames are not ours to handle any more.
      this.session.acked = serverAcked;
      for (const s of [...this.handled]) if (s <= serverAcked) this.handled.delete(s);
      this.persist();
      this.ev.acked(serverAcked);
    }
    this.stallMs = Math.max(3 * (w.pingIntervalSecs || 15), 10) * 1000;
    clearInterval(this.watchdog);
    this.watchdog = setInterval(() => {
      if (Date.now() - this.lastFrameAt > this.stallMs) {
        clearInterval(this.watchdog);
        stall();
      }
    }, 1000);
    this.setState({ kind: "connected", epoch: this.epoch });
    this.ev.welcome(w);
  }

  private pong(nonce: bigint): void {
    this.send({ case: "pong", value: create(PongSchema, { nonce }) }).then(
      (r) => {
        if (r.outcome !== SendOutcome.ACCEPTED) this.ev.log("warn", `pong: ${SendOutcome[r.outcome]} ${r.message}`);
      },
      // Harmless once: the next ping gets its pong; a dead link shows up as a dropped stream.
      (e) => this.ev.log("warn", `pong failed: ${errorText(e)}`),
    );
  }

  /** Sends one client frame with Send. */
  send(body: ClientFrame["body"], signal?: AbortSignal): Promise<SendResponse> {
    return this.operators.send(
      { sid: this.session.sid, frame: create(ClientFrameSchema, { body }) },
      bearer(this.session.token, signal, this.headers),
    );
  }

  /**
   * Replies to the request frame `seq`. The frame counts as handled unless the server says
   * the reply does not fit it (WRONG_KIND) or the call failed (it throws; retry later).
   */
  async reply(seq: number, body: ClientFrame["body"]): Promise<SendResponse> {
    const r = await this.send(body);
    if (r.outcome !== SendOutcome.WRONG_KIND && r.outcome !== SendOutcome.UNSPECIFIED) this.markHandled(seq);
    return r;
  }

  /** Records that frame `seq` needs nothing more and acks as far as possible. */
  markHandled(seq: number): void {
    if (seq <= this.session.acked || this.handled.has(seq)) return;
    this.handled.add(seq);
    let upTo = this.session.acked;
    while (this.handled.has(upTo + 1)) upTo++;
    if (upTo > this.session.acked) this.advanceTo(upTo);
    else this.persist();
  }

  /** Acks every frame up to `upTo`. */
  private advanceTo(upTo: number): void {
    for (const s of [...this.handled]) if (s <= upTo) this.handled.delete(s);
    this.session.acked = upTo;
    this.persist();
    this.ev.acked(upTo);
    this.send({ case: "ack", value: create(AckSchema, { seq: BigInt(upTo) }) }).then(
      (r) => {
        if (r.outcome !== SendOutcome.ACCEPTED) this.ev.log("warn", `ack ${upTo}: ${SendOutcome[r.outcome]} ${r.message}`);
      },
      // Not fatal: the next Subscribe carries last_seq, which acks as well.
      (e) => this.ev.log("warn", `ack ${upTo} failed (sent again on reconnect): ${errorText(e)}`),
    );
  }

  private persist(): void {
    this.session.handled = [...this.handled].sort((a, b) => a - b);
    try {
      this.ev.persist?.(this.session);
    } catch (e) {
      this.ev.log("error", `could not save the session: ${errorText(e)}`);
    }
  }
}
