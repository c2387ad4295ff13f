// The Operator: a typed handler API over the link. It answers each request once per
// req_id (across reconnects), acks a frame only once its reply was taken, retries replies
// whose Send failed, voids what a server restart voided, and never lets a handler's error
// escape: a throwing handler becomes a rejection, a failed spawn or an error answer.

import { Code, createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import {
  NoticeCode,
  OperatorService,
  SendOutcome,
  type Ask,
  type ClientFrame,
  type HookBefore,
  type ServerFrame,
  type Spawn,
  type Welcome,
} from "./gen/mlua_swarm/v1/operator_pb.js";
import { WorkerService } from "./gen/mlua_swarm/v1/worker_pb.js";
import {
  askReply,
  hookReply,
  safe,
  settle,
  spawnReply,
  tooLarge,
  type Handlers,
  type HandlerContext,
  type Logger,
  type Maybe,
  type NoticeName,
  type OperatorEvent,
  type OperatorNotice,
} from "./handlers.js";
import { OperatorLink, type ConnState, type LinkSession, type LogLevel } from "./link.js";
import { accessHeaders, backoff, bearer, DEFAULT_BACKOFF, delay, errorCode, errorText, retryable, valueToJson, type Backoff } from "./rpc.js";
import { Worker } from "./worker.js";

export interface OperatorOptions extends Handlers {
  /** The server, e.g. `http://127.0.0.1:7777`. Needed unless `transport` is given. */
  baseUrl?: string;
  /** Create a new session holding these roles (seats Blueprints route to). */
  roles?: string[];
  /** Or attach an existing session (optionally with its resume state from `onSession`). */
  session?: { sid: string; token: string; acked?: number; handled?: number[] };
  /** The server's API token (`mse-grpc serve --api-token`). */
  apiToken?: string;
  /** A gRPC-Web transport of your own (TLS options, a proxy…); `apiToken` is still sent. */
  transport?: Transport;
  /** Interceptors on every call of the default transport. */
  interceptors?: Interceptor[];
  /** Reconnect and retry delays. */
  backoff?: Partial<Backoff>;
  /** Log sink (default: console without debug). `null` silences it. */
  logger?: Logger | null;
}

export type TransportFactory = (opts: { baseUrl: string; interceptors: Interceptor[] }) => Transport;

type RequestKind = "hookBefore" | "spawn" | "ask";

interface Entry {
  reqId: string;
  kind: RequestKind;
  /** Seqs to mark handled once the reply was taken. */
  seqs: Set<number>;
  abort: AbortController;
  state: "running" | "sending" | "done";
  /** Server life (bumped by a restart) the request belongs to. */
  life: number;
  /** Why no reply will be sent (withdrawn, voided by a restart). */
  voided?: string;
}

/** Requests remembered after they were answered, to drop repeats. */
const DONE_MEMORY = 10_000;

const SEND_NOTICE: Partial<Record<SendOutcome, NoticeName>> = {
  [SendOutcome.DUPLICATE]: "DUPLICATE",
  [SendOutcome.UNKNOWN]: "UNKNOWN_REQ",
  [SendOutcome.STALE]: "STALE",
  [SendOutcome.WRONG_KIND]: "WRONG_KIND",
  [SendOutcome.UNSPECIFIED]: "UNSPECIFIED",
};

/** An operator session served by handlers. Use `Operator` from the package entry. */
export class OperatorBase {
  /** The session (sid, token, resume state) once started. */
  session?: LinkSession;
  private link?: OperatorLink;
  private readonly operators: Client<typeof OperatorService>;
  private readonly workers: Client<typeof WorkerService>;
  private readonly entries = new Map<string, Entry>();
  private readonly stopper = new AbortController();
  private readonly backoff: Backoff;
  private readonly log: (level: LogLevel, text: string) => void;
  private readonly access?: Record<string, string>;
  private life = 0;
  private ready?: Promise<void>;
  private closedWith?: (reason: string) => void;
  private refuseStart?: (e: Error) => void;
  /** Resolves with the reason once the operator stopped for good (stop(), or a fatal close). */
  readonly closed: Promise<string>;

  constructor(
    private readonly opts: OperatorOptions,
    defaultTransport: TransportFactory,
  ) {
    let transport = opts.transport;
    if (!transport) {
      if (!opts.baseUrl) throw new Error("Operator needs a baseUrl (or a transport)");
      transport = defaultTransport({ baseUrl: opts.baseUrl, interceptors: opts.interceptors ?? [] });
    }
    this.access = accessHeaders(opts.apiToken);
    this.operators = createClient(OperatorService, transport);
    this.workers = createClient(WorkerService, transport);
    this.backoff = { ...DEFAULT_BACKOFF, ...opts.backoff };
    const logger = opts.logger === undefined ? consoleLogger : (opts.logger ?? {});
    this.log = (level, text) => logger[level]?.(`[mse-operator] ${text}`);
    this.closed = new Promise((r) => (this.closedWith = r));
  }

  /** The link's connection state. */
  get state(): ConnState {
    return this.link?.state ?? { kind: "idle" };
  }

  /** The epoch of the current (or last) attach. */
  get epoch(): number {
    return this.link?.epoch ?? 0;
  }

  /**
   * Creates the session (with `roles`) or takes the given one, and subscribes. Resolves at
   * the first `welcome`; rejects if the session cannot be created or the server refuses it
   * for good (unknown sid, wrong token).
   */
  start(): Promise<void> {
    this.ready ??= this.open();
    return this.ready;
  }

  /** Ends the stream and aborts running handlers (their replies are not sent). */
  async stop(reason = "stopped"): Promise<void> {
    if (this.stopper.signal.aborted) return;
    this.stopper.abort();
    for (const e of this.entries.values()) if (e.state !== "done") this.void(e, `operator ${reason}`);
    this.link?.stop(reason);
    this.refuseStart?.(new Error(`operator ${reason} before it connected`));
    this.closedWith?.(reason);
  }

  private async open(): Promise<void> {
    this.session = await this.attachOrCreate();
    let welcomed: () => void = () => {};
    let refused: (e: Error) => void = () => {};
    const first = new Promise<void>((res, rej) => ((welcomed = res), (refused = rej)));
    this.refuseStart = refused;
    this.link = new OperatorLink(
      this.session,
      this.operators,
      {
        state: (s) => {
          this.emit({ type: "state", state: s });
          if (s.kind === "closed" && !this.stopper.signal.aborted) {
            refused(new Error(`operator session closed: ${s.reason}`));
            void this.stop(s.reason);
          }
        },
        welcome: (w) => {
          this.onWelcome(w);
          welcomed();
        },
        frame: (f) => this.onFrame(f),
        control: (f) => this.onControl(f),
        acked: () => {},
        persist: (s) => safe(() => this.opts.onSession?.(s), (e) => this.log("error", `onSession threw: ${errorText(e)}`)),
        log: (level, text) => this.log(level, text),
      },
      { backoff: this.backoff, headers: this.access },
    );
    this.link.start();
    return first;
  }

  private async attachOrCreate(): Promise<LinkSession> {
    const s = this.opts.session;
    if (s) return { sid: s.sid, token: s.token, acked: s.acked ?? 0, handled: s.handled ?? [] };
    for (let attempt = 0; ; attempt++) {
      try {
        const call = this.opts.apiToken ? bearer(this.opts.apiToken, this.stopper.signal, this.access) : { signal: this.stopper.signal };
        const r = await this.operators.createSession({ roles: this.opts.roles ?? [] }, call);
        this.log("info", `session ${r.sid} created (roles: ${r.roles.join(", ") || "none"})`);
        const created = { sid: r.sid, token: r.token, acked: 0, handled: [] };
        safe(() => this.opts.onSession?.(created), (e) => this.log("error", `onSession threw: ${errorText(e)}`));
        return created;
      } catch (e) {
        if (this.stopper.signal.aborted || !retryable(e)) throw e;
        const ms = backoff(attempt, this.backoff);
        this.log("warn", `CreateSession: ${errorText(e)}; retrying in ${(ms / 1000).toFixed(1)}s`);
        await delay(ms, this.stopper.signal);
      }
    }
  }

  private onWelcome(w: Welcome): void {
    if (w.serverRestarted) {
      // Requests of the old process are void: their steps come again as new requests.
      this.life++;
      for (const e of this.entries.values()) if (e.state !== "done") this.void(e, "server restarted");
      this.log("warn", `server restarted: requests from before are void (epoch ${w.epoch})`);
    } else {
      this.log("info", `connected: epoch ${w.epoch}, ${w.replayed} frame(s) replayed`);
    }
    this.emit({
      type: "welcome",
      sid: w.sid,
      epoch: Number(w.epoch),
      ackedSeq: Number(w.ackedSeq),
      replayed: w.replayed,
      serverRestarted: w.serverRestarted,
      welcome: w,
    });
  }

  private onFrame(f: ServerFrame): void {
    const seq = Number(f.seq);
    const b = f.body;
    switch (b.case) {
      case "hookBefore":
      case "spawn":
      case "ask":
        return this.onRequest(seq, b.case, b.value);
      case "hookAfter": {
        const { $typeName: _, result, ...rest } = b.value;
        return this.info(seq, "onHookAfter", () => this.opts.onHookAfter?.({ ...rest, result: valueToJson(result) }, this.ctx(seq)));
      }
      case "cancel": {
        const c = b.value;
        const e = this.entries.get(c.reqId);
        if (e && e.state !== "done") {
          this.void(e, `withdrawn: ${c.reason}`);
          this.finish(e);
        }
        this.log("info", `request ${c.reqId} withdrawn: ${c.reason}`);
        return this.info(seq, "onCancel", () => this.opts.onCancel?.(c, this.ctx(seq)));
      }
      default:
        this.log("warn", `unexpected frame ${b.case ?? "(empty)"} seq ${seq}`);
        this.link?.markHandled(seq);
    }
  }

  /** Runs an informational handler, then acks its frame (whatever the handler did). */
  private info(seq: number, name: string, fn: () => Maybe<void>): void {
    const life = this.life;
    void settle(fn).then((err) => {
      if (err !== undefined) this.log("error", `${name} threw: ${errorText(err)}`);
      if (life === this.life) this.link?.markHandled(seq);
    });
  }

  private onRequest(seq: number, kind: RequestKind, req: HookBefore | Spawn | Ask): void {
    const known = this.entries.get(req.reqId);
    if (known) {
      // The same request again (re-sent after a reconnect): it is being (or was) answered.
      this.log("debug", `${req.reqId} again at seq ${seq}: already ${known.state}`);
      if (known.state === "done") this.link?.markHandled(seq);
      else known.seqs.add(seq);
      return;
    }
    const e: Entry = { reqId: req.reqId, kind, seqs: new Set([seq]), abort: new AbortController(), state: "running", life: this.life };
    this.entries.set(req.reqId, e);
    void this.serve(e, seq, req);
  }

  private async serve(e: Entry, seq: number, req: HookBefore | Spawn | Ask): Promise<void> {
    const ctx = this.ctx(seq, e.abort.signal);
    const onError = (what: string, err: unknown) => {
      if (!e.voided) this.log("warn", `${what} failed: ${errorText(err)}`);
    };
    const reply =
      e.kind === "hookBefore"
        ? await hookReply(this.opts, req as HookBefore, ctx)
        : e.kind === "spawn"
          ? await spawnReply(this.opts, req as Spawn, new Worker(req as Spawn, this.workers, e.abort.signal, this.access), ctx, onError)
          : await askReply(this.opts, req as Ask, ctx, onError);
    await this.deliver(e, reply);
  }

  /** Sends a reply until the server took it (any outcome) or there is no point any more. */
  private async deliver(e: Entry, reply: ClientFrame["body"]): Promise<void> {
    e.state = "sending";
    for (let attempt = 0; ; attempt++) {
      if (e.voided || this.stopper.signal.aborted) {
        this.log("debug", `no reply to ${e.reqId}: ${e.voided ?? "stopped"}`);
        return this.finish(e);
      }
      try {
        const r = await this.link!.send(reply, this.stopper.signal);
        const code = SEND_NOTICE[r.outcome];
        if (code) this.notice({ code, reqId: e.reqId, message: r.message, source: "send" });
        return this.finish(e);
      } catch (err) {
        if (this.stopper.signal.aborted) return this.finish(e);
        if (errorCode(err) === Code.ResourceExhausted && !reply.case?.startsWith("hook")) {
          this.log("error", `reply to ${e.reqId} is over the server's data limit; sending an error instead`);
          reply = tooLarge(e.reqId, reply);
          continue;
        }
        if (!retryable(err)) {
          this.log("error", `reply to ${e.reqId} refused: ${errorText(err)}`);
          return this.finish(e);
        }
        const ms = backoff(attempt, this.backoff);
        this.log("warn", `reply to ${e.reqId} failed (${errorText(err)}); retrying in ${(ms / 1000).toFixed(1)}s`);
        await delay(ms, this.stopper.signal);
      }
    }
  }

  /** The request needs nothing more: ack its frames (if they belong to this server life). */
  private finish(e: Entry): void {
    if (e.state === "done") return;
    e.state = "done";
    if (e.life === this.life) for (const s of e.seqs) this.link?.markHandled(s);
    e.seqs.clear();
    // Remember answered requests (to drop repeats), the oldest forgotten first.
    if (this.entries.size > DONE_MEMORY) {
      for (const [id, old] of this.entries) {
        if (this.entries.size <= DONE_MEMORY) break;
        if (old.state === "done") this.entries.delete(id);
      }
    }
  }

  private void(e: Entry, why: string): void {
    e.voided ??= why;
    e.abort.abort(new Error(why));
  }

  private onControl(f: ServerFrame): void {
    const b = f.body;
    if (b.case === "notice") {
      const code = (NoticeCode[b.value.code] ?? "UNSPECIFIED") as NoticeName;
      this.notice({ code, reqId: b.value.reqId, message: b.value.message, source: "stream" });
    } else if (b.case === "closing") {
      this.log("info", `server closing the stream: ${b.value.reason} (retry after ${b.value.retryAfterMs} ms)`);
    }
  }

  private notice(n: OperatorNotice): void {
    const text = `notice ${n.code}${n.reqId ? ` (${n.reqId})` : ""}: ${n.message}`;
    if (this.opts.onNotice) safe(() => this.opts.onNotice?.(n), (e) => this.log("error", `onNotice threw: ${errorText(e)}`));
    else this.log("warn", text);
  }

  private emit(e: OperatorEvent): void {
    if (e.type === "state" && e.state.kind === "closed") this.emitClosed(e.state.reason);
    safe(() => this.opts.onEvent?.(e), (err) => this.log("error", `onEvent threw: ${errorText(err)}`));
  }

  private emitClosed(reason: string): void {
    safe(() => this.opts.onEvent?.({ type: "closed", reason }), (err) => this.log("error", `onEvent threw: ${errorText(err)}`));
  }

  private ctx(seq: number, signal: AbortSignal = this.stopper.signal): HandlerContext {
    return { seq, signal, epoch: this.epoch };
  }
}

const consoleLogger: Logger = {
  info: (t) => console.info(t),
  warn: (t) => console.warn(t),
  error: (t) => console.error(t),
};
