// The edgesocks Worker: routes only; the work lives in the modules they call.

import { Hono } from "hono";
import { handleCheckRequest } from "./check-endpoint.ts";
import type { EdgeEnv } from "./config.ts";
import { DEV_COUNTERS_PATH, handleDevCounters } from "./dev-counters.ts";
import { handleDnsRequest } from "./dns-endpoint.ts";
import { CHECK_PATH, DNS_PATH, PROTOCOL_VERSION, PROTOCOL_VERSIONS, TUNNEL_PATH } from "./protocol/index.ts";
import { handleTunnelRequest } from "./tunnel/tunnel-endpoint.ts";
import { EDGESOCKS_VERSION } from "./version.ts";

const app = new Hono<{ Bindings: EdgeEnv }>();

app.get("/healthz", (c) => c.json({ name: "edgesocks", version: EDGESOCKS_VERSION, protocol: PROTOCOL_VERSION, protocols: PROTOCOL_VERSIONS }));
app.all(TUNNEL_PATH, (c) => handleTunnelRequest(c.req.raw, c.env, c.executionCtx));
app.all(DNS_PATH, (c) => handleDnsRequest(c.req.raw, c.env));
app.all(CHECK_PATH, (c) => handleCheckRequest(c.req.raw, c.env));
app.get(DEV_COUNTERS_PATH, async (c) => (await handleDevCounters(c.req.raw, c.env)) ?? c.notFound());
app.notFound((c) => c.text(`not found: edgesocks serves ${TUNNEL_PATH}, ${DNS_PATH} and /healthz\n`, 404));
app.onError((error, c) => {
  console.error(`unhandled error: ${error.message}`);
  return c.text("internal error\n", 500);
});

export default app;
