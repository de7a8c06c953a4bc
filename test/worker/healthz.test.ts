import { exports } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { PROTOCOL_VERSION, PROTOCOL_VERSIONS } from "../../worker/protocol/index.ts";
import { EDGESOCKS_VERSION } from "../../worker/version.ts";

describe("GET /healthz", () => {
  it("reports the version and the protocol version as JSON", async () => {
    const response = await exports.default.fetch("http://edge.test/healthz");
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ name: "edgesocks", version: EDGESOCKS_VERSION, protocol: PROTOCOL_VERSION, protocols: PROTOCOL_VERSIONS });
  });
});

describe("GET /dev/counters", () => {
  it("is not found unless EDGESOCKS_DEV_COUNTERS is 1, as on any deployed Worker", async () => {
    const response = await exports.default.fetch("http://edge.test/dev/counters");
    expect(response.status).toBe(404);
    expect(await response.text()).toMatch(/^not found: edgesocks serves/);
  });
});
