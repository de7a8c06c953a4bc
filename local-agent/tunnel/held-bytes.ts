// What the agent holds for its streams through the edge, counted from flow control: download
// bytes received and not yet taken by their clients' sockets, upload bytes read from clients and
// not yet sent. Flow control bounds each by a window per stream (plus the upload read-ahead);
// SIGUSR2 logs the totals, which is how the memory tests check that bound (and an operator can
// look at a running agent without restarting it).

import { peakWindow } from "./window-budget.ts";

export type StreamHold = { downloadHeldBytes: number; uploadHeldBytes: number };

const liveStreams = new Set<{ hold(): StreamHold }>();

export function trackStream(stream: { hold(): StreamHold }): () => void {
  liveStreams.add(stream);
  return () => liveStreams.delete(stream);
}

/** One log line: the agent's held bytes now, over its streams through the edge. */
export function holdLine(): string {
  let download = 0;
  let upload = 0;
  for (const stream of liveStreams) {
    const hold = stream.hold();
    download += hold.downloadHeldBytes;
    upload += hold.uploadHeldBytes;
  }
  return `held: ${liveStreams.size} streams through the edge; download ${download} bytes not yet taken by clients, upload ${upload} bytes not yet sent; peak window ${peakWindow()} bytes`;
}
