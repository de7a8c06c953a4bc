// What the isolate holds for its streams, counted from flow control rather than guessed from
// memory: the upload bytes received and not yet written to their destinations, and the download
// bytes sent and not yet credited back (queued in WebSocket.send(), which has no backpressure, or
// in flight). Flow control bounds each by one window per stream; the memory tests check the
// bound against these counts (GET /dev/counters), and a per-isolate budget can be kept on them.

/** A stream's share of the isolate's held bytes. */
export type StreamHold = { uploadHeldBytes: number; downloadUncreditedBytes: number };

export type IsolateHold = StreamHold & { streams: number };

/** Every stream of this isolate that has not finished, across all the tunnels it serves. */
const liveStreams = new Set<{ hold(): StreamHold }>();

/** Counts `stream` until `finished` settles. */
export function trackStream(stream: { hold(): StreamHold }, finished: Promise<unknown>): void {
  liveStreams.add(stream);
  void finished.finally(() => liveStreams.delete(stream));
}

/** The isolate's held bytes now, summed over its live streams. */
export function isolateHold(): IsolateHold {
  const total: IsolateHold = { streams: liveStreams.size, uploadHeldBytes: 0, downloadUncreditedBytes: 0 };
  for (const stream of liveStreams) {
    const hold = stream.hold();
    total.uploadHeldBytes += hold.uploadHeldBytes;
    total.downloadUncreditedBytes += hold.downloadUncreditedBytes;
  }
  return total;
}
