// gRPC-Web clients for the server this page was loaded from, and JSON helpers for the
// google.protobuf.Value fields.

import { fromJson, toJson, type JsonObject, type JsonValue } from "@bufbuild/protobuf";
import { ValueSchema, timestampDate, type Timestamp, type Value } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { apiTokenInterceptor } from "./auth";
import { BlueprintService } from "./gen/mlua_swarm/v1/blueprint_pb";
import { OperatorService } from "./gen/mlua_swarm/v1/operator_pb";
import { ServerService } from "./gen/mlua_swarm/v1/server_pb";
import { TaskService } from "./gen/mlua_swarm/v1/task_pb";

// Every call carries the API token if this tab has one (see auth.ts).
const transport = createGrpcWebTransport({ baseUrl: location.origin, interceptors: [apiTokenInterceptor] });

export const operators = createClient(OperatorService, transport);
export const tasks = createClient(TaskService, transport);
export const blueprints = createClient(BlueprintService, transport);
export const server = createClient(ServerService, transport);

/** Call options carrying a session token. */
export function bearer(token: string, signal?: AbortSignal): { headers: Record<string, string>; signal?: AbortSignal } {
  return { headers: { authorization: `Bearer ${token}` }, signal };
}

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

export function errorCode(e: unknown): Code | undefined {
  return e instanceof ConnectError ? e.code : undefined;
}

export { Code };

export function valueToJson(v: Value | undefined): JsonValue {
  return v === undefined ? null : toJson(ValueSchema, v);
}

export function jsonToValue(j: JsonValue): Value {
  return fromJson(ValueSchema, j);
}

/** Pretty JSON for display. */
export function pretty(j: JsonValue | undefined): string {
  return JSON.stringify(j ?? null, null, 2);
}

/** Parses user input, naming the field in the error. Empty input gives `empty`. */
export function parseJson(text: string, what: string, empty?: JsonValue): JsonValue {
  if (text.trim() === "" && empty !== undefined) return empty;
  try {
    return JSON.parse(text) as JsonValue;
  } catch (e) {
    throw new Error(`${what} is not valid JSON: ${(e as Error).message}`);
  }
}

export function parseObject(text: string, what: string, empty?: JsonObject): JsonObject {
  const v = parseJson(text, what, empty);
  if (v === null || typeof v !== "object" || Array.isArray(v)) {
    throw new Error(`${what} must be a JSON object`);
  }
  return v;
}

export function tsMillis(t: Timestamp | undefined): number | undefined {
  return t ? timestampDate(t).getTime() : undefined;
}
