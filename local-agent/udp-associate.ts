// UDP ASSOCIATE (RFC 1928 section 7): placeholder until DNS over the edge lands.

import type { Socket } from "node:net";
import type { AgentConfig } from "./config.ts";
import type { Logger } from "./log.ts";
import { Reply, encodeReply } from "./socks5.ts";
import type { Destination } from "../worker/protocol.ts";

export type UdpAssociationRequest = {
  /** The TCP connection that asked; the association lives exactly as long as it does. */
  control: Socket;
  clientLabel: string;
  /** DST.ADDR/DST.PORT of the request: where the client says it will send from (zeros: unknown). */
  requested: Destination;
};

/** Answers a UDP ASSOCIATE request and relays the client's datagrams until `control` closes. */
export function startUdpAssociation(request: UdpAssociationRequest, _config: AgentConfig, log: Logger, onClosed: () => void): void {
  log.info(`${request.clientLabel} UDP ASSOCIATE refused: not supported yet`);
  request.control.end(encodeReply(Reply.CommandNotSupported));
  onClosed();
}
