// @mlua-swarm/operator for Node: the same API as index.ts, gRPC-Web over
// @connectrpc/connect-node (HTTP/1.1; https:// base URLs use TLS).

import type { Transport } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-node";
import { OperatorBase, type OperatorOptions } from "./operator.js";
import type { TransportOptions } from "./common.js";

export * from "./common.js";

/** A gRPC-Web transport to an mse-grpc server (Node http/https). */
export function createTransport(opts: TransportOptions): Transport {
  return createGrpcWebTransport({ baseUrl: opts.baseUrl, httpVersion: "1.1", interceptors: opts.interceptors });
}

/** An operator session served by handlers (see OperatorOptions). */
export class Operator extends OperatorBase {
  constructor(opts: OperatorOptions) {
    super(opts, createTransport);
  }
}
