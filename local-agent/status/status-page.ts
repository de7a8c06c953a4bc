// GET /status: one self-contained page, its CSS and script inline, nothing loaded from anywhere
// (the Content-Security-Policy lets only this style and this script run, by their hashes, and
// lets the script fetch /status.json from the agent alone). The script asks for /status.json
// every second and builds the page from it with textContent and SVG elements, never HTML
// strings: a destination's name is whatever a client sent, and stays text.

import { createHash } from "node:crypto";

/** How often the page asks for /status.json. */
export const PAGE_REFRESH_MS = 1_000;

const STYLE = `
:root { color-scheme: light dark; --ok: #1a7f37; --bad: #cf222e; --muted: #6e7781; --up: #d4760a; --down: #0969da; }
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em auto; max-width: 70em; padding: 0 1em; }
h1 { font-size: 1.4em; margin: 0; } h2 { font-size: 1.1em; margin: 1.4em 0 .4em; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .2em .6em .2em 0; border-bottom: 1px solid #8884; white-space: nowrap; }
td.number, th.number { text-align: right; font-variant-numeric: tabular-nums; }
td.destination { white-space: normal; word-break: break-all; }
.muted, #summary { color: var(--muted); }
.healthy { color: var(--ok); } .failing { color: var(--bad); } .unknown { color: var(--muted); }
#stale { color: var(--bad); font-weight: bold; }
svg { width: 100%; height: auto; max-height: 12em; }
svg .grid { stroke: #8886; stroke-width: 1; } svg text { fill: var(--muted); font-size: 11px; }
svg .up { fill: none; stroke: var(--up); stroke-width: 1.5; } svg .down { fill: none; stroke: var(--down); stroke-width: 1.5; }
.key-up { color: var(--up); } .key-down { color: var(--down); }
`;

const SCRIPT = `
"use strict";
const REFRESH_MS = ${PAGE_REFRESH_MS};
const $ = (id) => document.getElementById(id);
function formatBytes(bytes) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes, unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit++; }
  return (unit === 0 ? String(value) : value.toFixed(1)) + " " + units[unit];
}
function formatAge(ms) {
  const seconds = Math.floor(ms / 1000);
  if (seconds < 60) return seconds + " s";
  if (seconds < 3600) return Math.floor(seconds / 60) + " min " + (seconds % 60) + " s";
  return Math.floor(seconds / 3600) + " h " + Math.floor((seconds % 3600) / 60) + " min";
}
function row(cells) {
  const tr = document.createElement("tr");
  for (const [text, className] of cells) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    tr.appendChild(td);
  }
  return tr;
}
function fill(tbody, rows, emptyText, columns) {
  tbody.replaceChildren(...rows);
  if (rows.length === 0) {
    const td = document.createElement("td");
    td.colSpan = columns;
    td.className = "muted";
    td.textContent = emptyText;
    const tr = document.createElement("tr");
    tr.appendChild(td);
    tbody.appendChild(tr);
  }
}
function drawChart(throughput) {
  // The SVG is in the page's markup; only its points and labels change.
  const top = 14, bottom = 124, right = 600;
  const buckets = throughput.buckets;
  let peak = 0;
  for (const bucket of buckets) peak = Math.max(peak, bucket.upBytesPerSecond, bucket.downBytesPerSecond);
  const scale = peak > 0 ? peak : 1;
  const x = (index) => (buckets.length <= 1 ? 0 : (index / (buckets.length - 1)) * right);
  const y = (rate) => bottom - (rate / scale) * (bottom - top);
  const points = (key) => buckets.map((bucket, index) => x(index).toFixed(1) + "," + y(bucket[key]).toFixed(1)).join(" ");
  $("chart-down").setAttribute("points", points("downBytesPerSecond"));
  $("chart-up").setAttribute("points", points("upBytesPerSecond"));
  $("chart-peak").textContent = formatBytes(Math.round(peak)) + "/s";
  $("chart-span").textContent = Math.round((buckets.length * throughput.bucketMs) / 60000) + " min ago";
  const last = buckets[buckets.length - 1];
  $("chart-key-down").textContent = "down " + formatBytes(Math.round(last ? last.downBytesPerSecond : 0)) + "/s";
  $("chart-key-up").textContent = "up " + formatBytes(Math.round(last ? last.upBytesPerSecond : 0)) + "/s";
}
function render(status) {
  const uptime = formatAge(status.nowMs - status.startedAtMs);
  $("summary").textContent = "version " + status.version + " on " + status.listen + ", up " + uptime + "; " +
    formatBytes(status.bytes.downBytes) + " down, " + formatBytes(status.bytes.upBytes) + " up since the start";
  $("open-count").textContent = "(" + status.connections.open + ")";
  fill($("connections").tBodies[0], status.connections.listed.map((connection) => {
    const tr = row([
      [connection.destination, "destination"],
      [connection.route, "route"],
      [connection.edgeLabel || "", "edge"],
      [formatBytes(connection.upBytes), "number up"],
      [formatBytes(connection.downBytes), "number down"],
      [formatAge(connection.ageMs), "number age"],
    ]);
    tr.dataset.id = String(connection.id);
    return tr;
  }), "no connection is open", 6);
  $("unlisted").textContent = status.connections.unlisted > 0 ? status.connections.unlisted + " more not listed" : "";
  drawChart(status.throughput);
  const limit = status.workerRequests.freePlanDailyLimit;
  fill($("edges").tBodies[0], status.edges.map((edge) => row([
    [edge.edge, "edge"],
    [edge.health + (edge.consecutiveFailures ? " (" + edge.consecutiveFailures + " failed in a row)" : ""), edge.health],
    [edge.openStreams === null ? "" : String(edge.openStreams), "number"],
    [edge.poolSpares === null ? "" : String(edge.poolSpares), "number"],
    [edge.workerRequestsToday.toLocaleString("en"), "number requests"],
    [((edge.workerRequestsToday / limit) * 100).toFixed(2) + " %", "number"],
  ])), "no edge", 6);
  $("requests-note").textContent = "Worker requests since " + new Date(status.workerRequests.countingSinceMs).toISOString().replace(".000Z", "Z") +
    " (00:00 UTC or the agent's start); the free plan allows " + limit.toLocaleString("en") + " a day, counted again from " +
    new Date(status.workerRequests.resetsAtMs).toISOString().replace(".000Z", "Z") + ".";
  const pool = status.pool;
  fill($("pool").tBodies[0], [
    row([["spares ready", ""], [pool.readySpares === null ? "not reported (of " + pool.size + ")" : pool.readySpares + " of " + pool.size, "number spares"]]),
    row([["tunnels carrying a connection", ""], [String(pool.tunnelsInUse), "number tunnels"]]),
    row([["connections per tunnel, at most", ""], [String(pool.maxStreamsPerTunnel), "number"]]),
  ], "", 2);
  const ended = Object.entries(status.connections.ended).filter(([, count]) => count > 0);
  fill($("ended").tBodies[0], ended.map(([result, count]) => {
    const tr = row([[result.replaceAll("_", " "), "result"], [count.toLocaleString("en"), "number"]]);
    tr.dataset.result = result;
    return tr;
  }), "none yet", 2);
  const errors = Object.values(status.connections.errors).reduce((sum, count) => sum + count, 0);
  $("error-count").textContent = "(" + errors + " errors)";
}
async function refresh() {
  try {
    const response = await fetch("/status.json", { cache: "no-store", credentials: "same-origin" });
    if (!response.ok) throw new Error("HTTP " + response.status);
    render(await response.json());
    $("stale").textContent = "";
  } catch (error) {
    $("stale").textContent = "the agent is not answering (" + error.message + "); the figures below are from before";
  } finally {
    setTimeout(refresh, REFRESH_MS);
  }
}
refresh();
`;

const BODY = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>edgesocks status</title>
<link rel="icon" href="data:,">
<style>${STYLE}</style>
</head>
<body>
<header><h1>edgesocks</h1><p id="summary">loading…</p><p id="stale"></p></header>
<noscript><p>This page builds itself with a script; the same figures are at <a href="/status.json">/status.json</a> and <a href="/metrics">/metrics</a>.</p></noscript>
<section><h2>Open connections <span id="open-count"></span></h2>
<table id="connections"><thead><tr><th>Destination</th><th>Route</th><th>Edge</th><th class="number">Up</th><th class="number">Down</th><th class="number">Age</th></tr></thead><tbody></tbody></table>
<p id="unlisted" class="muted"></p></section>
<section><h2>Throughput</h2>
<svg id="chart" viewBox="0 0 600 140" role="img" aria-label="bytes per second, each way, over the last minutes">
<line class="grid" x1="0" y1="14" x2="600" y2="14"/><line class="grid" x1="0" y1="124" x2="600" y2="124"/>
<polyline id="chart-down" class="down" points=""/><polyline id="chart-up" class="up" points=""/>
<text id="chart-peak" x="2" y="11"></text><text id="chart-span" x="2" y="138"></text><text x="598" y="138" text-anchor="end">now</text>
</svg>
<p><span id="chart-key-down" class="key-down"></span> · <span id="chart-key-up" class="key-up"></span> <span class="muted">(the last whole 5 s)</span></p></section>
<section><h2>Edges</h2>
<table id="edges"><thead><tr><th>Edge</th><th>Health</th><th class="number">Streams</th><th class="number">Spares</th><th class="number">Worker requests today</th><th class="number">of the free plan's day</th></tr></thead><tbody></tbody></table>
<p id="requests-note" class="muted"></p></section>
<section><h2>Pool and tunnels</h2>
<table id="pool"><tbody></tbody></table></section>
<section><h2>Connections ended <span id="error-count"></span></h2>
<table id="ended"><thead><tr><th>Result</th><th class="number">Connections</th></tr></thead><tbody></tbody></table></section>
<script>${SCRIPT}</script>
</body>
</html>
`;

function sha256(text: string): string {
  return `'sha256-${createHash("sha256").update(text, "utf8").digest("base64")}'`;
}

/** The page, the same bytes every time. */
export const STATUS_PAGE_HTML = BODY;

/**
 * Nothing loads from anywhere but the agent, and nothing inline runs but the page's own style
 * and script (by hash); no frame may hold the page, no form post from it.
 */
export const STATUS_PAGE_CSP = [
  "default-src 'none'",
  `script-src ${sha256(SCRIPT)}`,
  `style-src ${sha256(STYLE)}`,
  "connect-src 'self'",
  "img-src data:",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ");
