// @mlua-swarm/operator for browsers (and any runtime with fetch): gRPC-Web over
// @connectrpc/connect-web. Node resolves the package to node.ts instead (same API).

import type { Transport } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { OperatorBase, type OperatorOptions } from "./operator.js";
import type { TransportOptions } from "./common.js";

export * from "./common.js";

/** A gRPC-Web transport to an mse-grpc server (fetch-based). */
export function createTransport(opts: TransportOptions): Transport {
  return createGrpcWebTransport({ baseUrl: opts.baseUrl, interceptors: opts.interceptors });
}

/** An operator session served by handlers (see OperatorOptions). */
export class Operator extends OperatorBase {
  constructor(opts: OperatorOptions) {
    super(opts, createTransport);
  }
}
