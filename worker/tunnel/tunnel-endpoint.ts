// GET /tunnel: every check a request must pass before it becomes a tunnel, each with its own
// HTTP status and message, and nothing opened until all have passed.

import type { EdgeEnv } from "../config.ts";
import { configOrRefusal, refuse, tokenRefusal } from "../refusal.ts";
import { OPEN_HEADER, POOLED_HEADER, ProtocolError, SUBPROTOCOLS, chooseVersion, decodeHeaderOpen, subprotocolFor } from "../protocol/index.ts";
import { TunnelSession, type TunnelStart } from "./tunnel-session.ts";

/** Answers a tunnel request: 101 with a running session, or the status that says why not. */
export async function handleTunnelRequest(request: Request, env: EdgeEnv, ctx: Pick<ExecutionContext, "waitUntil">): Promise<Response> {
  const config = configOrRefusal(env, "relays");
  if (config instanceof Response) return config;
  if (request.method !== "GET") return refuse(405, "the tunnel endpoint takes GET with a WebSocket upgrade", { Allow: "GET" });
  if (request.headers.get("Upgrade")?.toLowerCase() !== "websocket") {
    return refuse(426, "the tunnel endpoint takes only WebSocket upgrades", { Upgrade: "websocket" });
  }
  const unauthorized = await tokenRefusal(request, config);
  if (unauthorized) return unauthorized;
  const offered = (request.headers.get("Sec-WebSocket-Protocol") ?? "").split(",").map((name) => name.trim());
  // The newest version both sides speak: agents of the previous version keep working.
  const version = chooseVersion(offered);
  if (version === undefined) {
    return refuse(400, `unsupported protocol version: this edge speaks ${SUBPROTOCOLS.join(", ")}; update the agent or redeploy the Worker so both match`);
  }
  const start = tunnelStart(request.headers);
  if (start instanceof Response) return start;
  const pair = new WebSocketPair();
  const [client, server] = [pair[0], pair[1]];
  // Since compatibility date 2026 binary messages arrive as Blob unless asked otherwise; the
  // relay wants synchronous bytes.
  server.binaryType = "arraybuffer";
  server.accept();
  // With an OPEN in the upgrade, connect() starts here, before the 101 leaves: the agent hears
  // OPENED one round trip after its request instead of two.
  new TunnelSession(server, config, version, (promise) => ctx.waitUntil(promise)).start(start);
  return new Response(null, { status: 101, webSocket: client, headers: { "Sec-WebSocket-Protocol": subprotocolFor(version) } });
}

/** How the upgrade asks the tunnel to begin (OPEN_HEADER, POOLED_HEADER), or the 400 that says what is wrong. */
function tunnelStart(headers: Headers): TunnelStart | Response {
  const openValue = headers.get(OPEN_HEADER);
  const pooledValue = headers.get(POOLED_HEADER);
  if (pooledValue !== null && pooledValue !== "1") return refuse(400, `${POOLED_HEADER} must be 1`);
  if (pooledValue !== null && openValue !== null) {
    return refuse(400, `${OPEN_HEADER} and ${POOLED_HEADER} exclude each other: a pooled tunnel waits for its OPEN`);
  }
  if (pooledValue !== null) return { kind: "pooled" };
  if (openValue === null) return { kind: "plain" };
  try {
    return { kind: "open", open: decodeHeaderOpen(openValue.trim()) };
  } catch (error) {
    if (error instanceof ProtocolError) return refuse(400, `bad ${OPEN_HEADER}: ${error.message}`);
    throw error;
  }
}
