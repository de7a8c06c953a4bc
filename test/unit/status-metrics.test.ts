// /metrics (local-agent/status/metrics.ts) read back with a strict reader of the text format
// 0.0.4 (status-prometheus.ts): every family named edgesocks_*, with HELP and TYPE, counters
// ending in _total, label values escaped; and the figures are the snapshot's.

import { describe, expect, it } from "vitest";
import { parseAgentCommand, type AgentConfig } from "../../local-agent/config/config.ts";
import { AgentStatus } from "../../local-agent/status/agent-status.ts";
import { ConnectionRegistry } from "../../local-agent/status/connection-registry.ts";
import { createLogger } from "../../local-agent/log.ts";
import { renderMetrics } from "../../local-agent/status/metrics.ts";
import { EdgeSet } from "../../local-agent/tunnel/edge-set.ts";
import { WorkerRequestCounter } from "../../local-agent/status/worker-requests.ts";
import { checkEdgesocksConventions, parsePrometheusText, type PromFamily } from "./status-prometheus.ts";

function configWith(args: string[]): AgentConfig {
  const command = parseAgentCommand(["--bypass", "none", ...args], { EDGESOCKS_TOKEN: "metrics-test-token-0123456789" });
  if (command.kind !== "run") throw new Error(`expected a run command, got ${command.kind}`);
  return command.config;
}

const valueOf = (family: PromFamily | undefined, labels: Record<string, string> = {}) =>
  family?.samples.find((sample) => JSON.stringify(sample.labels) === JSON.stringify(labels))?.value;

/** An agent with two edges, one connection open on each route, three ended, and some Worker requests. */
function busyAgent() {
  const now = Date.parse("2026-03-01T12:00:00Z");
  const config = configWith(["--edge", "https://a.example", "--edge", "https://b.example", "--pool-size", "3"]);
  const workerRequests = new WorkerRequestCounter(() => now);
  const status = new AgentStatus(config, { now: () => now, startedAtMs: now - 60_000, workerRequests, connections: new ConnectionRegistry(() => now) });
  const edge = status.connections.open({ destination: "x.example:443", route: "edge", edgeLabel: "https://a.example" });
  edge.addUp(1_000);
  edge.addDown(250_000);
  status.connections.open({ destination: "10.0.0.1:22", route: "direct", edgeLabel: undefined }).addDown(5);
  status.connections.open({ destination: "y.example:443", route: "edge", edgeLabel: "https://a.example" }).close("ok");
  status.connections.open({ destination: "z.example:443", route: "edge", edgeLabel: "https://a.example" }).close("connection_refused");
  status.connections.open({ destination: "z.example:25", route: "block", edgeLabel: undefined }).close("blocked");
  for (let index = 0; index < 7; index++) workerRequests.count("wss://a.example/tunnel");
  workerRequests.count("https://b.example/dns");
  return { status, config };
}

describe("renderMetrics", () => {
  it("writes text a strict reader of format 0.0.4 accepts, every family edgesocks_* with HELP and TYPE, counters in _total", () => {
    const families = parsePrometheusText(renderMetrics(busyAgent().status.snapshot()));
    checkEdgesocksConventions(families);
    expect(families.get("edgesocks_connections_total")?.type).toBe("counter");
    expect(families.get("edgesocks_bytes_total")?.type).toBe("counter");
    expect(families.get("edgesocks_connections_open")?.type).toBe("gauge");
    expect(families.get("edgesocks_worker_requests_today")?.type).toBe("gauge");
  });

  it("reports connections open by route, ended by result, bytes each way, Worker requests per edge and the pool", () => {
    const families = parsePrometheusText(renderMetrics(busyAgent().status.snapshot()));
    expect(valueOf(families.get("edgesocks_connections_open"), { route: "edge" })).toBe(1);
    expect(valueOf(families.get("edgesocks_connections_open"), { route: "direct" })).toBe(1);
    expect(valueOf(families.get("edgesocks_connections_total"), { result: "ok" })).toBe(1);
    expect(valueOf(families.get("edgesocks_connections_total"), { result: "connection_refused" })).toBe(1);
    expect(valueOf(families.get("edgesocks_connections_total"), { result: "blocked" })).toBe(1);
    expect(valueOf(families.get("edgesocks_connections_total"), { result: "reset" })).toBe(0);
    expect(valueOf(families.get("edgesocks_bytes_total"), { direction: "up" })).toBe(1_000);
    expect(valueOf(families.get("edgesocks_bytes_total"), { direction: "down" })).toBe(250_005);
    expect(valueOf(families.get("edgesocks_worker_requests_today"), { edge: "https://a.example" })).toBe(7);
    expect(valueOf(families.get("edgesocks_worker_requests_today"), { edge: "https://b.example" })).toBe(1);
    expect(valueOf(families.get("edgesocks_worker_requests_daily_limit"))).toBe(100_000);
    expect(valueOf(families.get("edgesocks_pool_size"))).toBe(3);
    expect(valueOf(families.get("edgesocks_tunnels_in_use"))).toBe(1);
    expect(valueOf(families.get("edgesocks_start_time_seconds"))).toBe(Date.parse("2026-03-01T11:59:00Z") / 1000);
  });

  it("leaves out the edges' health and the pool's spares until an edge set reports them, then shows them per edge", () => {
    const { status } = busyAgent();
    let families = parsePrometheusText(renderMetrics(status.snapshot()));
    expect(families.has("edgesocks_edge_healthy")).toBe(false);
    expect(families.has("edgesocks_pool_spares")).toBe(false);
    expect(status.snapshot().edges.map((edge) => edge.health)).toEqual(["unknown", "unknown"]);
    // The shape EdgeSet.status() gives.
    status.useSources({
      edgeStatuses: () => [
        { edgeLabel: "https://a.example", healthy: true, consecutiveFailures: 0, openStreams: 1, poolSpares: 3 },
        { edgeLabel: "https://b.example", healthy: false, consecutiveFailures: 4, nextRetryAt: 1_234, openStreams: 0, poolSpares: 0 },
      ],
    });
    families = parsePrometheusText(renderMetrics(status.snapshot()));
    checkEdgesocksConventions(families);
    expect(valueOf(families.get("edgesocks_edge_healthy"), { edge: "https://a.example" })).toBe(1);
    expect(valueOf(families.get("edgesocks_edge_healthy"), { edge: "https://b.example" })).toBe(0);
    expect(valueOf(families.get("edgesocks_edge_consecutive_failures"), { edge: "https://b.example" })).toBe(4);
    expect(valueOf(families.get("edgesocks_pool_spares"))).toBe(3);
    expect(status.snapshot().edges[1]).toMatchObject({ health: "failing", nextRetryAtMs: 1_234, workerRequestsToday: 1 });
  });

  it("takes the edge set's own report (EdgeSet.status()) as its edges' source, unchanged", () => {
    const { status, config } = busyAgent();
    const edgeSet = new EdgeSet(config, createLogger("error", () => {}));
    status.useSources({ edgeStatuses: () => edgeSet.status() });
    expect(status.snapshot().edges).toMatchObject([
      { edge: "https://a.example", health: "healthy", consecutiveFailures: 0, openStreams: 0, poolSpares: 0, workerRequestsToday: 7 },
      { edge: "https://b.example", health: "healthy", consecutiveFailures: 0, openStreams: 0, poolSpares: 0, workerRequestsToday: 1 },
    ]);
    expect(status.snapshot().pool.readySpares).toBe(0);
    edgeSet.close();
  });

  it("escapes backslash, double quote and line feed in label values", () => {
    const { status } = busyAgent();
    const label = 'https://odd.example/a"b\\c\nd';
    status.useSources({ edgeStatuses: () => [{ edgeLabel: label, healthy: true }] });
    const text = renderMetrics(status.snapshot());
    expect(text).toContain('edgesocks_edge_healthy{edge="https://odd.example/a\\"b\\\\c\\nd"} 1\n');
    expect(valueOf(parsePrometheusText(text).get("edgesocks_edge_healthy"), { edge: label })).toBe(1);
  });
});

describe("the strict reader the tests above rely on", () => {
  const good = "# HELP edgesocks_x_total X.\n# TYPE edgesocks_x_total counter\nedgesocks_x_total{a=\"1\"} 2\n";
  it("accepts a well-formed family", () => {
    expect(valueOf(parsePrometheusText(good).get("edgesocks_x_total"), { a: "1" })).toBe(2);
  });
  it.each([
    ["no final line feed", good.slice(0, -1)],
    ["a sample twice", `${good}edgesocks_x_total{a="1"} 3\n`],
    ["TYPE after the samples", "edgesocks_y 1\n# TYPE edgesocks_y gauge\n"],
    ["a family split by another", `${good}# TYPE edgesocks_z gauge\nedgesocks_z 1\nedgesocks_x_total{a="2"} 1\n`],
    ["an unknown escape in a label value", 'edgesocks_y{a="\\t"} 1\n'],
    ["an unquoted label value", "edgesocks_y{a=1} 1\n"],
    ["a value that is no number", "edgesocks_y one\n"],
    ["an empty line", `${good}\n`],
    ["an unknown type", "# TYPE edgesocks_y gauges\n"],
  ])("refuses %s", (_what, text) => {
    expect(() => parsePrometheusText(text)).toThrow();
  });
  it("refuses a counter not named _total, and a family without HELP", () => {
    expect(() => checkEdgesocksConventions(parsePrometheusText("# HELP edgesocks_y Y.\n# TYPE edgesocks_y counter\nedgesocks_y 1\n"))).toThrow(/_total/);
    expect(() => checkEdgesocksConventions(parsePrometheusText("# TYPE edgesocks_y gauge\nedgesocks_y 1\n"))).toThrow(/HELP/);
  });
});
