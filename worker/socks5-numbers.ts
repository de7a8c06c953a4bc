// The numbers of SOCKS5 (RFC 1928, with RFC 1929's method), defined once: the agent serves
// SOCKS5 to its clients and the Worker speaks it to an upstream proxy (worker/dial/).
//
// Pure: no sockets, no Workers or Node APIs.

export const SOCKS_VERSION = 0x05;

/** Authentication methods (RFC 1928 section 3). */
export const AuthMethod = {
  NoAuthentication: 0x00,
  /** RFC 1929. */
  UsernamePassword: 0x02,
  NoAcceptableMethods: 0xff,
} as const;
export type AuthMethod = (typeof AuthMethod)[keyof typeof AuthMethod];

/** Request commands (RFC 1928 section 4). The Worker sends only Connect. */
export const Command = {
  Connect: 0x01,
  Bind: 0x02,
  UdpAssociate: 0x03,
} as const;
export type Command = (typeof Command)[keyof typeof Command];

/** Reply codes (RFC 1928 section 6). */
export const Reply = {
  Succeeded: 0x00,
  GeneralFailure: 0x01,
  NotAllowedByRuleset: 0x02,
  NetworkUnreachable: 0x03,
  HostUnreachable: 0x04,
  ConnectionRefused: 0x05,
  TtlExpired: 0x06,
  CommandNotSupported: 0x07,
  AddressTypeNotSupported: 0x08,
} as const;
export type Reply = (typeof Reply)[keyof typeof Reply];
