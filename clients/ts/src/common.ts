// What both entry points (index.ts: browsers; node.ts: Node) export.

export { OperatorLink, type ConnState, type LinkEvents, type LinkOptions, type LinkSession, type LogLevel } from "./link.js";
export { OperatorBase, type OperatorOptions, type TransportFactory } from "./operator.js";
export type {
  AskRequest,
  HandlerContext,
  Handlers,
  HookAfterInfo,
  HookVerdict,
  Logger,
  NoticeName,
  OperatorEvent,
  OperatorNotice,
} from "./handlers.js";
export { Worker, SubmitOutcome, type Outcome, type Prompt } from "./worker.js";
export { ACCESS_HEADER, accessHeaders, backoff, bearer, Code, ConnectError, errorCode, errorText, jsonToValue, valueToJson, type Backoff } from "./rpc.js";
export type { Ask, Cancel, HookAfter, HookBefore, Notice, ServerFrame, Spawn, Welcome } from "./gen/mlua_swarm/v1/operator_pb.js";

/** Options of `createTransport`. */
export interface TransportOptions {
  baseUrl: string;
  interceptors?: import("@connectrpc/connect").Interceptor[];
}
