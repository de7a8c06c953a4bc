// The tunnel endpoint's refusals (docs/protocol.md §2): each check answers with its own status,
// header and one-line body, and nothing is opened until all have passed.

import { exports } from "cloudflare:workers";
import { afterEach, describe, expect, it } from "vitest";
import { SUBPROTOCOL } from "../../worker/protocol/index.ts";
import { SECOND_TEST_TOKEN, TEST_TOKEN, TunnelClient, closeAllTunnels, requestTunnel, requestWithEnv, tunnelHeaders } from "./tunnel-client.ts";

afterEach(closeAllTunnels);

const WWW_AUTHENTICATE = 'Bearer realm="edgesocks"';

/** Accepts the 101's socket so the test's cleanup closes it. */
function acceptTunnel(response: Response): void {
  if (response.webSocket) new TunnelClient(response.webSocket).close();
}

describe("GET /tunnel authentication", () => {
  it("answers 401 'missing bearer token' without an Authorization header, and opens nothing", async () => {
    const response = await requestTunnel({ headers: tunnelHeaders({ Authorization: undefined }) });
    expect(response.status).toBe(401);
    expect(response.headers.get("WWW-Authenticate")).toBe(WWW_AUTHENTICATE);
    expect(response.headers.get("Content-Type")).toBe("text/plain; charset=utf-8");
    expect(await response.text()).toBe("missing bearer token\n");
    expect(response.webSocket).toBeNull();
  });

  it("answers 401 'missing bearer token' for an Authorization scheme other than Bearer", async () => {
    const response = await requestTunnel({ headers: tunnelHeaders({ Authorization: `Basic ${btoa(`user:${TEST_TOKEN}`)}` }) });
    expect(response.status).toBe(401);
    expect(await response.text()).toBe("missing bearer token\n");
    expect(response.webSocket).toBeNull();
  });

  it("answers 401 'wrong token' for a token in no entry, and opens nothing", async () => {
    const response = await requestTunnel({ headers: tunnelHeaders({ Authorization: "Bearer worker-test-token-wrong-0000000" }) });
    expect(response.status).toBe(401);
    expect(response.headers.get("WWW-Authenticate")).toBe(WWW_AUTHENTICATE);
    expect(await response.text()).toBe("wrong token\n");
    expect(response.webSocket).toBeNull();
  });

  it("refuses a proper prefix of a configured token", async () => {
    const response = await requestTunnel({ headers: tunnelHeaders({ Authorization: `Bearer ${TEST_TOKEN.slice(0, -1)}` }) });
    expect(response.status).toBe(401);
    expect(await response.text()).toBe("wrong token\n");
  });

  it("refuses the whole comma-separated token list presented as one token", async () => {
    const response = await requestTunnel({ headers: tunnelHeaders({ Authorization: `Bearer ${TEST_TOKEN},${SECOND_TEST_TOKEN}` }) });
    expect(response.status).toBe(401);
    expect(await response.text()).toBe("wrong token\n");
  });

  it("accepts the first configured token and echoes the subprotocol in the 101", async () => {
    const response = await requestTunnel();
    acceptTunnel(response);
    expect(response.status).toBe(101);
    expect(response.webSocket).not.toBeNull();
    expect(response.headers.get("Sec-WebSocket-Protocol")).toBe(SUBPROTOCOL);
  });

  it("accepts the second token of the configured list", async () => {
    const response = await requestTunnel({ headers: tunnelHeaders({ Authorization: `Bearer ${SECOND_TEST_TOKEN}` }) });
    acceptTunnel(response);
    expect(response.status).toBe(101);
    expect(response.webSocket).not.toBeNull();
  });

  it("takes the Bearer scheme name in any case", async () => {
    const response = await requestTunnel({ headers: tunnelHeaders({ Authorization: `bEARER ${TEST_TOKEN}` }) });
    acceptTunnel(response);
    expect(response.status).toBe(101);
  });
});

describe("GET /tunnel method, upgrade and version checks", () => {
  it("answers 426 with Upgrade: websocket to a plain GET", async () => {
    const response = await requestTunnel({ headers: tunnelHeaders({ Upgrade: undefined }) });
    expect(response.status).toBe(426);
    expect(response.headers.get("Upgrade")).toBe("websocket");
    expect(await response.text()).toBe("the tunnel endpoint takes only WebSocket upgrades\n");
    expect(response.webSocket).toBeNull();
  });

  it("answers 426 before checking the token", async () => {
    const response = await requestTunnel({ headers: tunnelHeaders({ Upgrade: undefined, Authorization: undefined }) });
    expect(response.status).toBe(426);
  });

  it("answers 405 with Allow: GET to a POST, before the upgrade check", async () => {
    const response = await requestTunnel({ method: "POST", body: "x", headers: tunnelHeaders({ Upgrade: undefined }) });
    expect(response.status).toBe(405);
    expect(response.headers.get("Allow")).toBe("GET");
    expect(await response.text()).toBe("the tunnel endpoint takes GET with a WebSocket upgrade\n");
  });

  it("answers 405 to a POST that carries a valid upgrade and token", async () => {
    // Straight to the app: a service-binding fetch with Upgrade: websocket reaches the Worker
    // as a GET whatever its method (measured in workerd).
    const response = await requestWithEnv({ EDGESOCKS_TOKEN: TEST_TOKEN }, "/tunnel", { method: "POST", body: "x" });
    expect(response.status).toBe(405);
    expect(response.webSocket).toBeNull();
  });

  it("answers 400 naming the edge's version when the offered subprotocol is another version", async () => {
    const response = await requestTunnel({ headers: tunnelHeaders({ "Sec-WebSocket-Protocol": "edgesocks.v1" }) });
    expect(response.status).toBe(400);
    expect(await response.text()).toMatch(/^unsupported protocol version: this edge speaks edgesocks\.v4, edgesocks\.v3, edgesocks\.v2; .+\n$/);
    expect(response.webSocket).toBeNull();
  });

  it("answers 400 when no subprotocol is offered", async () => {
    const response = await requestTunnel({ headers: tunnelHeaders({ "Sec-WebSocket-Protocol": undefined }) });
    expect(response.status).toBe(400);
    expect(await response.text()).toContain("this edge speaks edgesocks.v4, edgesocks.v3, edgesocks.v2");
  });

  it("checks the token before the version, so an unauthenticated peer learns no version", async () => {
    const response = await requestTunnel({
      headers: tunnelHeaders({ Authorization: "Bearer worker-test-token-wrong-0000000", "Sec-WebSocket-Protocol": "edgesocks.v1" }),
    });
    expect(response.status).toBe(401);
    expect(await response.text()).not.toContain("edgesocks.v");
  });

  it("picks the newest version both speak out of a list of offered versions", async () => {
    const response = await requestTunnel({ headers: tunnelHeaders({ "Sec-WebSocket-Protocol": "edgesocks.v5, edgesocks.v3, edgesocks.v4, edgesocks.v2" }) });
    acceptTunnel(response);
    expect(response.status).toBe(101);
    expect(response.headers.get("Sec-WebSocket-Protocol")).toBe("edgesocks.v4");
    expect(SUBPROTOCOL).toBe("edgesocks.v4");
  });

  it("keeps serving an agent of the previous version (edgesocks.v2 alone)", async () => {
    const response = await requestTunnel({ headers: tunnelHeaders({ "Sec-WebSocket-Protocol": "edgesocks.v2" }) });
    acceptTunnel(response);
    expect(response.status).toBe(101);
    expect(response.headers.get("Sec-WebSocket-Protocol")).toBe("edgesocks.v2");
  });
});

describe("other paths", () => {
  it("answers 404 naming the paths it serves", async () => {
    const response = await exports.default.fetch("http://edge.test/socks", { headers: tunnelHeaders() });
    expect(response.status).toBe(404);
    expect(await response.text()).toBe("not found: edgesocks serves /tunnel, /dns and /healthz\n");
  });
});

describe("edge configuration", () => {
  it("answers 503 to a valid upgrade when no EDGESOCKS_TOKEN is configured", async () => {
    const response = await requestWithEnv({});
    expect(response.status).toBe(503);
    expect(await response.text()).toContain("no EDGESOCKS_TOKEN configured");
    expect(response.webSocket).toBeNull();
  });

  it("answers 503 when EDGESOCKS_TOKEN holds only separators and spaces", async () => {
    const response = await requestWithEnv({ EDGESOCKS_TOKEN: " , ," });
    expect(response.status).toBe(503);
  });

  it("answers 503 before the method check", async () => {
    const response = await requestWithEnv({}, "/tunnel", { method: "POST" });
    expect(response.status).toBe(503);
  });

  it("answers 500 naming the entry when a configured token is shorter than 16 characters", async () => {
    const response = await requestWithEnv({ EDGESOCKS_TOKEN: `${TEST_TOKEN}, short-token` });
    expect(response.status).toBe(500);
    expect(await response.text()).toBe("edgesocks is misconfigured: EDGESOCKS_TOKEN entry 2 is shorter than 16 characters\n");
    expect(response.webSocket).toBeNull();
  });

  it("answers 500 naming EDGESOCKS_WINDOW_BYTES when the window is out of range", async () => {
    const response = await requestWithEnv({ EDGESOCKS_TOKEN: TEST_TOKEN, EDGESOCKS_WINDOW_BYTES: "1024" });
    expect(response.status).toBe(500);
    expect(await response.text()).toMatch(/^edgesocks is misconfigured: EDGESOCKS_WINDOW_BYTES must be an integer from 16384 to 67108864\n$/);
  });

  it("opens a tunnel with a token from the bindings it is given", async () => {
    const response = await requestWithEnv({ EDGESOCKS_TOKEN: TEST_TOKEN });
    acceptTunnel(response);
    expect(response.status).toBe(101);
  });
});
