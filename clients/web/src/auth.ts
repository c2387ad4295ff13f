// The API token of a server started with `mse-grpc serve --api-token`: kept for this tab
// only (sessionStorage, never localStorage), sent on every call by one interceptor, and
// asked for when a call comes back UNAUTHENTICATED.
//
// Headers: `x-mse-access-token: <api token>` on every call; `authorization: Bearer <api
// token>` too, unless the call already carries `authorization` (a session token: Subscribe,
// Send, GetSession, DeleteSession), so the two never collide.
//
// A refused call (other than Subscribe / Send, which only use the session token) waits for
// the person to enter a token, then is sent again with it; if they dismiss the prompt, it
// fails with its original error, and so do later ones until they set a token (the header's
// "API token" button). The token is never logged.

import { Code, ConnectError, createContextKey, type Interceptor, type StreamRequest } from "@connectrpc/connect";

const KEY = "mse.apiToken";
export const ACCESS_HEADER = "x-mse-access-token";

/** Set on a call to send exactly its own headers (checking a candidate token). */
export const RAW_CREDENTIALS = createContextKey(false, { description: "send the call's own credentials only" });

/** Why the prompt is shown. */
export interface TokenNeed {
  /** "missing": no token was sent; "refused": the stored one was sent and refused. */
  reason: "missing" | "refused";
  /** The refused call, e.g. "ListTasks". */
  call: string;
  /** The server's message. */
  message: string;
}

type Listener = () => void;

let asker: ((need: TokenNeed) => void) | undefined;
const listeners = new Set<Listener>();
let waiters: { resolve: () => void; reject: () => void }[] = [];
let declined = false;

export function apiToken(): string | undefined {
  try {
    return sessionStorage.getItem(KEY) || undefined;
  } catch {
    return undefined;
  }
}

/** Stores the token for this tab and sends the calls waiting for it again. */
export function setApiToken(token: string): void {
  sessionStorage.setItem(KEY, token);
  declined = false;
  const w = waiters;
  waiters = [];
  w.forEach((x) => x.resolve());
  changed();
}

/** Forgets the token; the next refused call asks again. */
export function forgetApiToken(): void {
  try {
    sessionStorage.removeItem(KEY);
  } catch {
    // Storage disabled: nothing was kept.
  }
  declined = false;
  changed();
}

/** The prompt was dismissed: the waiting calls fail, and later refused ones fail at once. */
export function declineApiToken(): void {
  declined = true;
  const w = waiters;
  waiters = [];
  w.forEach((x) => x.reject());
  changed();
}

/** True while refused calls wait for a token. */
export function callsWaitingForToken(): boolean {
  return waiters.length > 0;
}

/** True while refused calls wait for a token, or after the prompt was dismissed. */
export function apiTokenWanted(): boolean {
  return waiters.length > 0 || declined;
}

/** Who shows the prompt (once: the UI). */
export function onApiTokenNeeded(fn: (need: TokenNeed) => void): void {
  asker = fn;
}

/** Called when the token or the wait for one changes (the header button). */
export function onApiTokenChange(fn: Listener): void {
  listeners.add(fn);
}

function changed(): void {
  listeners.forEach((fn) => fn());
}

function waitForToken(need: TokenNeed, signal: AbortSignal): Promise<void> {
  if (declined || !asker || signal.aborted) return Promise.reject();
  return new Promise<void>((resolve, reject) => {
    const w = { resolve, reject };
    waiters.push(w);
    signal.addEventListener(
      "abort",
      () => {
        waiters = waiters.filter((x) => x !== w);
        reject();
      },
      { once: true },
    );
    asker?.(need);
    changed();
  });
}

/** Subscribe and Send are authenticated by the session token alone. */
function sessionTokenCall(req: { service: { typeName: string }; method: { name: string } }): boolean {
  return req.service.typeName === "mlua_swarm.v1.OperatorService" && (req.method.name === "Subscribe" || req.method.name === "Send");
}

/**
 * Whether an error asks for the API token. A call that carries a session token in
 * `authorization` can also be refused for that token: only a message naming the API
 * (access) token counts there.
 */
function wantsApiToken(e: unknown, carriesSessionToken: boolean): e is ConnectError {
  if (!(e instanceof ConnectError) || e.code !== Code.Unauthenticated) return false;
  return !carriesSessionToken || /\b(api|access)[ _-]?token\b/i.test(e.rawMessage);
}

async function* replay<T>(messages: T[]): AsyncIterable<T> {
  yield* messages;
}

/** Adds the API token to every call; waits for one and retries when a call is refused. */
export const apiTokenInterceptor: Interceptor = (next) => async (req) => {
  if (req.contextValues.get(RAW_CREDENTIALS)) return next(req);
  const carriesSessionToken = req.header.has("authorization");
  const stamp = (): string | undefined => {
    const token = apiToken();
    if (token) {
      req.header.set(ACCESS_HEADER, token);
      if (!carriesSessionToken) req.header.set("authorization", `Bearer ${token}`);
    } else {
      req.header.delete(ACCESS_HEADER);
      if (!carriesSessionToken) req.header.delete("authorization");
    }
    return token;
  };
  if (sessionTokenCall(req)) {
    stamp();
    return next(req);
  }
  // A server-streaming call's one request message can be read once per attempt: keep it.
  let messages: unknown[] | undefined;
  if (req.stream) {
    messages = [];
    for await (const m of req.message) messages.push(m);
  }
  for (;;) {
    const sent = stamp();
    const attempt = messages ? ({ ...req, message: replay(messages) } as StreamRequest) : req;
    try {
      return await next(attempt);
    } catch (e) {
      if (!wantsApiToken(e, carriesSessionToken)) throw e;
      const now = apiToken();
      // The token changed while this call was under way: send it again with the new one.
      if (now !== sent) continue;
      if (sent !== undefined) forgetApiToken();
      try {
        await waitForToken({ reason: sent === undefined ? "missing" : "refused", call: req.method.name, message: e.rawMessage }, req.signal);
      } catch {
        throw e;
      }
    }
  }
};
