// Puts each connection in the registry from the one place every connection passes, whatever
// its front door (SOCKS5, SOCKS4, HTTP CONNECT, a forwarded http:// request): the dialer, once it
// knows the route. It watches the client side of the stream the dialer hands on, so no route
// needs to know about it: bytes the client sends (its 'data'), bytes written to it (its write(),
// the success answer left out), how a failed open was answered (its status), whether the client
// was reset, and the end (onClosed).

import type { AgentConfig } from "../config/config.ts";
import { Route } from "../config/routing.ts";
import type { ClientConnection, StreamRequest } from "../tunnel/stream-request.ts";
import { formatDestination, type StreamStatus } from "../../worker/protocol/index.ts";
import { statusFor } from "./agent-status.ts";
import { ConnectionResult, RESULT_FOR_STATUS, type ConnectionRecord, type ConnectionRegistry } from "./connection-registry.ts";

/** What the meter saw of a connection by its end. */
export type ObservedEnd = {
  route: Route;
  /** The status of the failed open the client was answered with, if it was. */
  failedStatus: StreamStatus | undefined;
  /** The client was reset (resetConnection: a TCP reset, or a pair half destroyed with an error). */
  reset: boolean;
  /** The client sent its FIN ('end' was read), and the agent ended its side (end() was called). */
  clientEnded: boolean;
  agentEnded: boolean;
};

/** How a connection ended, from what its meter saw: a refusal first, then a reset, then whether both sides finished. */
export function resultOf(end: ObservedEnd): ConnectionResult {
  if (end.route === Route.Block) return ConnectionResult.Blocked;
  if (end.failedStatus !== undefined) return RESULT_FOR_STATUS[end.failedStatus];
  if (end.reset) return ConnectionResult.Reset;
  return end.clientEnded && end.agentEnded ? ConnectionResult.Ok : ConnectionResult.ClientClosed;
}

const records = new WeakMap<ClientConnection, ConnectionRecord>();

/**
 * Registers `request`'s connection on `route` and returns the request to hand to the route:
 * the same client, its answer and onClosed wrapped so the registry hears how it ends. Call it
 * before the route starts, and pass the route the request it returns.
 */
export function meterConnection(request: StreamRequest, config: AgentConfig, route: Route, registry: ConnectionRegistry = statusFor(config).connections): StreamRequest {
  const { client } = request;
  const record = registry.open({
    destination: formatDestination(request.destination),
    route,
    edgeLabel: route === Route.Edge ? config.edgeLabel : undefined,
  });
  records.set(client, record);
  let failedStatus: StreamStatus | undefined;
  let reset = false;
  /** The success answer, written next: not the destination's bytes. */
  let successAnswer: Uint8Array | undefined;

  const resetAndDestroy = client.resetAndDestroy;
  // A client that is no socket (the HTTP forward's pair half) is reset by destroying it with an error.
  const wasReset = () => reset || (!resetAndDestroy && client.errored !== null);
  const end = () => record.close(resultOf({ route, failedStatus, reset: wasReset(), clientEnded: client.readableEnded, agentEnded: client.writableEnded }));
  if (route !== Route.Block) {
    record.addUp(request.earlyBytes.byteLength);
    // Every route pauses the client as it starts, right after this; that pause outlasts the resume
    // a first 'data' listener schedules, so the route's own flow control stays in charge.
    client.on("data", (chunk: Buffer) => record.addUp(chunk.byteLength));
    const write = client.write;
    client.write = ((chunk: unknown, ...rest: unknown[]): boolean => {
      if (chunk === successAnswer) successAnswer = undefined;
      else record.addDown(byteLengthOf(chunk));
      return Reflect.apply(write, client, [chunk, ...rest]) as boolean;
    }) as ClientConnection["write"];
    if (resetAndDestroy) {
      client.resetAndDestroy = () => {
        reset = true;
        return Reflect.apply(resetAndDestroy, client, []);
      };
    }
    // onClosed comes first from every route; this only ends a record a route never closed.
    client.once("close", () => setImmediate(end));
  }
  return {
    ...request,
    answer: {
      succeeded: () => {
        successAnswer = request.answer.succeeded();
        return successAnswer;
      },
      failed: (status, reason) => {
        failedStatus ??= status;
        return request.answer.failed(status, reason);
      },
    },
    onClosed: () => {
      end();
      request.onClosed();
    },
  };
}

/**
 * Names the edge `client`'s stream goes through, once chosen (several edges: the edge set
 * calls it); until then a connection on the edge route shows the first edge.
 */
export function noteEdge(client: ClientConnection, edgeLabel: string): void {
  records.get(client)?.useEdge(edgeLabel);
}

function byteLengthOf(chunk: unknown): number {
  if (typeof chunk === "string") return Buffer.byteLength(chunk);
  if (ArrayBuffer.isView(chunk)) return chunk.byteLength;
  return 0;
}
