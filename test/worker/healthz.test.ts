import { exports } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { PROTOCOL_VERSION, PROTOCOL_VERSIONS } from "../../worker/protocol.ts";
import { EDGESOCKS_VERSION } from "../../worker/version.ts";

describe("GET /healthz", () => {
  it("reports the version and the protocol version as JSON", async () => {
    const response = await exports.default.fetch("http://edge.test/healthz");
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ name: "edgesocks", version: EDGESOCKS_VERSION, protocol: PROTOCOL_VERSION, protocols: PROTOCOL_VERSIONS });
  });
});
