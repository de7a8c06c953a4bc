// --window-bytes other than the default, end to end: the smallest window (credit returned every
// 4 KiB), an odd size that is no power of two, and the largest, each moving bytes both ways at
// once and a download the origin hashes, every byte checked.

import { createHash, randomBytes } from "node:crypto";
import type { Server, Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { MAX_WINDOW_BYTES, MIN_WINDOW_BYTES } from "../../worker/protocol/index.ts";
import { echo, startTcpOrigin, writeRandom, type Listening } from "./origins.ts";
import { startAgent, type RunningAgent } from "./processes.ts";
import { readAll, socksConnect } from "./socks-client.ts";

const MIB = 1024 * 1024;

let echoOrigin: Listening<Server>;
let downloadOrigin: Listening<Server>;
/** The SHA-256 of what the download origin sent on each connection, in order of connection. */
const sentHashes: Promise<string>[] = [];
beforeAll(async () => {
  echoOrigin = await startTcpOrigin(echo);
  downloadOrigin = await startTcpOrigin((socket: Socket) => {
    sentHashes.push(
      writeRandom(socket, 24 * MIB).then((sha256) => {
        socket.end();
        return sha256;
      }),
    );
  });
});
afterAll(async () => {
  await echoOrigin?.close();
  await downloadOrigin?.close();
});

describe.each([
  { windowBytes: MIN_WINDOW_BYTES, name: "the smallest window" },
  { windowBytes: 100_003, name: "an odd window" },
  { windowBytes: MAX_WINDOW_BYTES, name: "the largest window" },
])("--window-bytes $windowBytes ($name)", ({ windowBytes }) => {
  let agent: RunningAgent;
  beforeAll(async () => {
    agent = await startAgent(inject("edgeUrl"), inject("edgeToken"), ["--window-bytes", String(windowBytes)]);
  });
  afterAll(async () => {
    await agent?.stop();
  });

  it("echoes 8 MiB written while it is read back, byte for byte", async () => {
    const payload = randomBytes(8 * MIB + 13);
    const socket = await socksConnect(agent.port, "127.0.0.1", echoOrigin.port);
    const answer = readAll(socket);
    socket.end(payload);
    expect(Buffer.compare(await answer, payload)).toBe(0);
  });

  it("downloads 24 MiB with the SHA-256 the origin sent", async () => {
    const connection = sentHashes.length;
    const socket = await socksConnect(agent.port, "127.0.0.1", downloadOrigin.port);
    const hash = createHash("sha256");
    let receivedBytes = 0;
    await new Promise<void>((resolve, reject) => {
      socket.on("data", (chunk: Buffer) => {
        hash.update(chunk);
        receivedBytes += chunk.byteLength;
      });
      socket.once("end", resolve);
      socket.once("error", reject);
    });
    expect(receivedBytes).toBe(24 * MIB);
    expect(hash.digest("hex")).toBe(await sentHashes[connection]);
  });
});
