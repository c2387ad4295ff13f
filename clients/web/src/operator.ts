// The browser operator door: one Subscribe stream (server frames) plus unary Send calls
// (client frames), resumable across reconnects and page reloads.
//
// Bookkeeping: a request frame (hook_before, spawn, ask) counts as handled once it was
// answered (or withdrawn by `cancel`); an informational one (hook_after, cancel) once it was
// shown. Acks are cumulative, so the link acks the highest seq up to which *every* frame was
// handled and remembers handled frames above it. Subscribe resumes with `last_seq` = that
// ack, so frames still waiting for a person are re-sent after a reload.

import { create } from "@bufbuild/protobuf";
import {
  AckSchema,
  ClientFrameSchema,
  PongSchema,
  SendOutcome,
  type ClientFrame,
  type SendResponse,
  type ServerFrame,
  type Welcome,
} from "./gen/mlua_swarm/v1/operator_pb";
import { bearer, Code, errorCode, errorText, operators } from "./rpc";
import { saveSession, type SavedSession } from "./store";

export type ConnState =
  | { kind: "idle" }
  | { kind: "connecting"; attempt: number }
  | { kind: "connected"; epoch: number }
  | { kind: "reconnecting"; attempt: number; inMs: number; reason: string }
  | { kind: "closed"; reason: string };

export interface LinkEvents {
  state(s: ConnState): void;
  welcome(w: Welcome): void;
  /** A request or info frame (seq > 0) not handled yet; each seq once per page life. */
  frame(f: ServerFrame): void;
  /** notice / closing (pings are answered here and only reported). */
  control(f: ServerFrame): void;
  /** Everything up to `seq` is acknowledged (by us or, seen in welcome, by another client). */
  acked(seq: number): void;
  log(level: "info" | "warn" | "error", text: string): void;
}

/** Statuses after which retrying the same Subscribe cannot help. */
const FATAL = new Set<Code>([Code.Unauthenticated, Code.NotFound, Code.InvalidArgument, Code.PermissionDenied]);

const BACKOFF_BASE_MS = 500;
const BACKOFF_CAP_MS = 15_000;

/** Exponential backoff with equal jitter: half fixed, half random. */
export function backoff(attempt: number): number {
  const ceil = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** Math.min(attempt, 10));
  return Math.round(ceil / 2 + Math.random() * (ceil / 2));
}

export class OperatorLink {
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

  constructor(
    readonly session: SavedSession,
    private readonly ev: LinkEvents,
  ) {
    this.handled = new Set(session.handled.filter((s) => s > session.acked));
  }

  get acked(): number {
    return this.session.acked;
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
      const stream = operators.subscribe(
        { sid: this.session.sid, lastSeq: BigInt(this.session.acked) },
        bearer(this.session.token, ac.signal),
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
          default: {
            const seq = Number(f.seq);
            if (seq <= this.session.acked || this.handled.has(seq) || this.seen.has(seq)) break;
            this.seen.add(seq);
            this.ev.frame(f);
          }
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
    const inMs = closing ? Math.max(closing.retryAfterMs, 100) : backoff(this.attempt);
    this.attempt++;
    // A drop that is retried is a warning (the header shows it); what cannot be retried is
    // an error (above).
    this.ev.log("warn", `Subscribe dropped (${reason}); reconnecting in ${(inMs / 1000).toFixed(1)}s`);
    this.setState({ kind: "reconnecting", attempt: this.attempt, inMs, reason });
    this.retryTimer = setTimeout(() => {
      if (!this.stopped && gen === this.generation) void this.run();
    }, inMs);
  }

  private onWelcome(w: Welcome, stall: () => void): void {
    this.attempt = 0;
    this.epoch = Number(w.epoch);
    const serverAcked = Number(w.ackedSeq);
    if (serverAcked > this.session.acked) {
      // Another client acknowledged further: those frames are not ours to show any more.
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
  send(body: ClientFrame["body"]): Promise<SendResponse> {
    return operators.send(
      { sid: this.session.sid, frame: create(ClientFrameSchema, { body }) },
      bearer(this.session.token),
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
    while (this.handled.has(upTo + 1)) this.handled.delete(++upTo);
    if (upTo > this.session.acked) {
      this.session.acked = upTo;
      this.persist();
      this.ev.acked(upTo);
      this.send({ case: "ack", value: create(AckSchema, { seq: BigInt(upTo) }) }).then(
        (r) => {
          if (r.outcome !== SendOutcome.ACCEPTED) this.ev.log("warn", `ack ${upTo}: ${SendOutcome[r.outcome]} ${r.message}`);
        },
        // Not fatal: the next Subscribe carries last_seq, which acks as well.
        (e) => this.ev.log("error", `ack ${upTo} failed (will be sent again on reconnect): ${errorText(e)}`),
      );
    } else {
      this.persist();
    }
  }

  private persist(): void {
    this.session.handled = [...this.handled].sort((a, b) => a - b);
    try {
      saveSession(this.session);
    } catch (e) {
      this.ev.log("error", `could not save the session in localStorage: ${errorText(e)}`);
    }
  }
}
