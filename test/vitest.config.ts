// Three layers, one `npm test`: pure unit tests (Node), Worker tests inside workerd
// (@cloudflare/vitest-plugin), and end-to-end tests with the real agent, the real Worker under
// wrangler dev and real clients.

import { cloudflareTest } from "@cloudflare/vitest-plugin";
import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

const root = fileURLToPath(new URL("..", import.meta.url));

/** Token the workerd tests' Worker accepts; long enough for the Worker's minimum. */
export const WORKER_TEST_TOKENS = "worker-test-token-0123456789,worker-test-token-second-abcdef";

export default defineConfig({
  root,
  test: {
    projects: [
      {
        root,
        test: {
          name: "unit",
          include: ["test/unit/**/*.test.ts"],
          environment: "node",
        },
      },
      {
        root,
        plugins: [
          cloudflareTest({
            wrangler: { configPath: "./wrangler.toml" },
            // A resolver on a loopback port where nothing listens unless a test names its stub:
            // the Worker's default (Cloudflare's DoH) would be a request off this machine.
            miniflare: { bindings: { EDGESOCKS_TOKEN: WORKER_TEST_TOKENS, EDGESOCKS_DOH_URL: "http://127.0.0.1:9/dns-query" } },
          }),
        ],
        test: {
          name: "worker",
          include: ["test/worker/**/*.test.ts"],
          globalSetup: ["test/worker/global-setup.ts"],
          testTimeout: 30_000,
        },
      },
      {
        root,
        test: {
          name: "e2e",
          include: ["test/e2e/**/*.test.ts"],
          environment: "node",
          globalSetup: ["test/e2e/global-setup.ts"],
          // One wrangler dev and one agent per file; files run one at a time on 2 cores.
          fileParallelism: false,
          testTimeout: 180_000,
          hookTimeout: 120_000,
        },
      },
    ],
  },
});
