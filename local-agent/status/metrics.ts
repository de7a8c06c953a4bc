// /metrics: a status snapshot in Prometheus' text exposition format, version 0.0.4
// (prometheus.io/docs/instrumenting/exposition_formats/): per family a HELP and a TYPE line, then
// its samples; counters end in _total; label values escaped (backslash, double quote, newline).

import type { StatusSnapshot } from "./agent-status.ts";

/** The Content-Type Prometheus expects for this format. */
export const METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

type Sample = { labels?: Record<string, string>; value: number };
type Family = { name: string; type: "counter" | "gauge"; help: string; samples: Sample[] };

/** The snapshot as Prometheus text, every metric named edgesocks_*. */
export function renderMetrics(snapshot: StatusSnapshot): string {
  const { connections, bytes, pool, edges, workerRequests } = snapshot;
  const knownHealth = edges.filter((edge) => edge.health !== "unknown");
  const families: Family[] = [
    { name: "edgesocks_info", type: "gauge", help: "The agent's version, as a label; always 1.", samples: [{ labels: { version: snapshot.version }, value: 1 }] },
    { name: "edgesocks_start_time_seconds", type: "gauge", help: "When the agent started, in seconds since the Unix epoch.", samples: [{ value: snapshot.startedAtMs / 1000 }] },
    {
      name: "edgesocks_connections_open",
      type: "gauge",
      help: "Client connections open now, by route.",
      samples: Object.entries(connections.openByRoute).map(([route, count]) => ({ labels: { route }, value: count })),
    },
    {
      name: "edgesocks_connections_total",
      type: "counter",
      help: "Client connections ended since the agent started, by result (ok, client_closed, reset, blocked, or the failed open's status).",
      samples: Object.entries(connections.ended).map(([result, count]) => ({ labels: { result }, value: count })),
    },
    {
      name: "edgesocks_bytes_total",
      type: "counter",
      help: "Bytes relayed for clients since the agent started: up from clients, down to them.",
      samples: [
        { labels: { direction: "up" }, value: bytes.upBytes },
        { labels: { direction: "down" }, value: bytes.downBytes },
      ],
    },
    { name: "edgesocks_pool_size", type: "gauge", help: "Spare tunnels the warm pool keeps ready (--pool-size).", samples: [{ value: pool.size }] },
    {
      name: "edgesocks_pool_spares",
      type: "gauge",
      help: "Spare tunnels open and ready now (absent while no pool runs).",
      samples: pool.readySpares === null ? [] : [{ value: pool.readySpares }],
    },
    { name: "edgesocks_tunnels_in_use", type: "gauge", help: "Tunnels carrying a client connection now.", samples: [{ value: pool.tunnelsInUse }] },
    {
      name: "edgesocks_edge_healthy",
      type: "gauge",
      help: "1 while the edge's tunnels open, 0 while they fail; absent while its health is unknown.",
      samples: knownHealth.map((edge) => ({ labels: { edge: edge.edge }, value: edge.health === "healthy" ? 1 : 0 })),
    },
    {
      name: "edgesocks_edge_consecutive_failures",
      type: "gauge",
      help: "Failed tunnel attempts in a row to the edge; absent where unknown.",
      samples: edges.flatMap((edge) => (edge.consecutiveFailures === null ? [] : [{ labels: { edge: edge.edge }, value: edge.consecutiveFailures }])),
    },
    {
      name: "edgesocks_worker_requests_today",
      type: "gauge",
      help: "Worker requests (tunnel upgrades and DNS queries the edge answered) this agent made since 00:00 UTC or its start, whichever is later.",
      samples: edges.map((edge) => ({ labels: { edge: edge.edge }, value: edge.workerRequestsToday })),
    },
    {
      name: "edgesocks_worker_requests_daily_limit",
      type: "gauge",
      help: "Worker requests a day on Cloudflare's free plan.",
      samples: [{ value: workerRequests.freePlanDailyLimit }],
    },
  ];
  const lines: string[] = [];
  for (const family of families) {
    if (family.samples.length === 0) continue;
    lines.push(`# HELP ${family.name} ${escapeHelp(family.help)}`, `# TYPE ${family.name} ${family.type}`);
    for (const sample of family.samples) lines.push(`${family.name}${formatLabels(sample.labels)} ${formatValue(sample.value)}`);
  }
  return `${lines.join("\n")}\n`;
}

function formatLabels(labels: Record<string, string> | undefined): string {
  if (!labels) return "";
  const pairs = Object.entries(labels).map(([name, value]) => `${name}="${escapeLabelValue(value)}"`);
  return `{${pairs.join(",")}}`;
}

/** Label values: backslash, double quote and line feed escaped. */
export function escapeLabelValue(value: string): string {
  return value.replaceAll("\\", "\\\\").replaceAll('"', '\\"').replaceAll("\n", "\\n");
}

/** HELP text: backslash and line feed escaped. */
function escapeHelp(text: string): string {
  return text.replaceAll("\\", "\\\\").replaceAll("\n", "\\n");
}

function formatValue(value: number): string {
  if (Number.isNaN(value)) return "NaN";
  if (value === Number.POSITIVE_INFINITY) return "+Inf";
  if (value === Number.NEGATIVE_INFINITY) return "-Inf";
  return String(value);
}
