// Small helpers shared by the link, the operator and the worker: error text and codes,
// JSON <-> google.protobuf.Value, bearer call options, backoff.

import { fromJson, toJson, type JsonValue } from "@bufbuild/protobuf";
import { ValueSchema, type Value } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";

export { Code, ConnectError };

/** "NOT_FOUND: operator session op-… not found" for RPC errors, the message otherwise. */
export function errorText(e: unknown): string {
  if (e instanceof ConnectError) {
    const name = Code[e.code] ?? String(e.code);
    const snake = name.replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
    return `${snake}: ${e.rawMessage || "(no message)"}`;
  }
  if (e instanceof Error) return e.message;
  return String(e);
}

/** The RPC status code of an error, if it is one. */
export function errorCode(e: unknown): Code | undefined {
  return e instanceof ConnectError ? e.code : undefined;
}

/** Errors after which the same call may succeed later (network, server restart). */
export function retryable(e: unknown): boolean {
  const code = errorCode(e);
  if (code === undefined) return true;
  return [Code.Unavailable, Code.Unknown, Code.Internal, Code.DeadlineExceeded, Code.Aborted, Code.Canceled].includes(code);
}

export function valueToJson(v: Value | undefined): JsonValue {
  return v === undefined ? null : toJson(ValueSchema, v);
}

export function jsonToValue(j: JsonValue): Value {
  return fromJson(ValueSchema, j);
}

/** Call options carrying a bearer credential (a session token or a worker handle), plus `extra` headers. */
export function bearer(token: string, signal?: AbortSignal, extra?: Record<string, string>): { headers: Record<string, string>; signal?: AbortSignal } {
  return { headers: { ...extra, authorization: `Bearer ${token}` }, signal };
}

/** Backoff settings: the first delay is drawn from [baseMs/2, baseMs], doubling up to capMs. */
export interface Backoff {
  baseMs: number;
  capMs: number;
}

export const DEFAULT_BACKOFF: Backoff = { baseMs: 500, capMs: 15_000 };

/** Exponential backoff with equal jitter: half fixed, half random. */
export function backoff(attempt: number, b: Backoff = DEFAULT_BACKOFF): number {
  const ceil = Math.min(b.capMs, b.baseMs * 2 ** Math.min(attempt, 16));
  return Math.round(ceil / 2 + Math.random() * (ceil / 2));
}

/** The header that carries the server's API token (`mse-grpc serve --api-token`). */
export const ACCESS_HEADER = "x-mse-access-token";

/** Headers that carry the server's API token: `x-mse-access-token` on every call. */
export function accessHeaders(apiToken: string | undefined): Record<string, string> | undefined {
  return apiToken ? { [ACCESS_HEADER]: apiToken } : undefined;
}

/** Resolves after `ms`, or at once when `signal` fires. */
export function delay(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done(): void {
      clearTimeout(t);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}
