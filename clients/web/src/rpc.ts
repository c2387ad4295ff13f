// gRPC-Web clients for the server this page was loaded from, and JSON helpers for the
// google.protobuf.Value fields (the error and Value helpers are the SDK's).

import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { apiTokenInterceptor } from "./auth";
import { BlueprintService } from "@mlua-swarm/operator/gen/blueprint_pb";
import { OperatorService } from "@mlua-swarm/operator/gen/operator_pb";
import { ServerService } from "@mlua-swarm/operator/gen/server_pb";
import { TaskService } from "@mlua-swarm/operator/gen/task_pb";

// Every call carries the API token if this tab has one (see auth.ts).
const transport = createGrpcWebTransport({ baseUrl: location.origin, interceptors: [apiTokenInterceptor] });

export const operators = createClient(OperatorService, transport);
export const tasks = createClient(TaskService, transport);
export const blueprints = createClient(BlueprintService, transport);
export const server = createClient(ServerService, transport);

export { bearer, Code, errorCode, errorText, jsonToValue, valueToJson } from "@mlua-swarm/operator";

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
