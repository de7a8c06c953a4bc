// GET /check (docs/protocol.md, end of §9): proves a bearer token with 204 and opens nothing; refuses
// as GET /tunnel does (401 with WWW-Authenticate, 405 for another method, 503 without a token).

import { exports } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { CHECK_PATH } from "../../worker/protocol/index.ts";
import { SECOND_TEST_TOKEN, TEST_TOKEN, requestWithEnv } from "./tunnel-client.ts";

const WWW_AUTHENTICATE = 'Bearer realm="edgesocks"';

/** Sends a request for /check to the Worker as deployed in the tests; `authorization` undefined sends none. */
function requestCheck(authorization: string | undefined, init: RequestInit = {}): Promise<Response> {
  const headers: Record<string, string> = authorization === undefined ? {} : { Authorization: authorization };
  return exports.default.fetch(`http://edge.test${CHECK_PATH}`, { headers, ...init });
}

describe("GET /check", () => {
  it("answers 204 with no body to an accepted token", async () => {
    const response = await requestCheck(`Bearer ${TEST_TOKEN}`);
    expect(response.status).toBe(204);
    expect(await response.text()).toBe("");
    expect(response.webSocket).toBeNull();
  });

  it("accepts the second token of the configured list", async () => {
    expect((await requestCheck(`Bearer ${SECOND_TEST_TOKEN}`)).status).toBe(204);
  });

  it("answers 401 'wrong token' with WWW-Authenticate to a token in no entry", async () => {
    const response = await requestCheck("Bearer worker-test-token-wrong-0000000");
    expect(response.status).toBe(401);
    expect(response.headers.get("WWW-Authenticate")).toBe(WWW_AUTHENTICATE);
    expect(response.headers.get("Content-Type")).toBe("text/plain; charset=utf-8");
    expect(await response.text()).toBe("wrong token\n");
  });

  it("answers 401 'missing bearer token' without an Authorization header", async () => {
    const response = await requestCheck(undefined);
    expect(response.status).toBe(401);
    expect(response.headers.get("WWW-Authenticate")).toBe(WWW_AUTHENTICATE);
    expect(await response.text()).toBe("missing bearer token\n");
  });

  it("refuses a proper prefix of a configured token", async () => {
    const response = await requestCheck(`Bearer ${TEST_TOKEN.slice(0, -1)}`);
    expect(response.status).toBe(401);
    expect(await response.text()).toBe("wrong token\n");
  });

  it("answers 405 with Allow: GET to a POST, even with an accepted token", async () => {
    const response = await requestCheck(`Bearer ${TEST_TOKEN}`, { method: "POST", body: "x" });
    expect(response.status).toBe(405);
    expect(response.headers.get("Allow")).toBe("GET");
    expect(await response.text()).toBe("the check endpoint takes GET with a bearer token\n");
  });

  it("answers 503 when the edge has no token configured, so no token passes", async () => {
    const response = await requestWithEnv({}, CHECK_PATH, { headers: { Authorization: `Bearer ${TEST_TOKEN}` } });
    expect(response.status).toBe(503);
    expect(await response.text()).toMatch(/^edgesocks has no EDGESOCKS_TOKEN configured, so it checks tokens for no one; /);
  });
});
