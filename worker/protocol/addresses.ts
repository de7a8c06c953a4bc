// Destination addresses as the protocol carries them: the typed Destination and the pure
// parsers and formatters of IPv4, IPv6 and host names that both sides use.

import { AddressType } from "./constants.ts";

/** A destination as the agent names it and the edge dials it. */
export type Destination =
  | { type: typeof AddressType.IPv4; host: string; port: number }
  | { type: typeof AddressType.IPv6; host: string; port: number }
  | { type: typeof AddressType.Domain; host: string; port: number };

/** Host names are LDH labels in practice; this refuses control characters, spaces and '/'. */
export function isPlausibleHostname(host: string): boolean {
  return /^[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_.])?$/.test(host) && !host.includes("..");
}

/** Four octets of a dotted-quad IPv4 address, or undefined. */
export function parseIPv4(text: string): number[] | undefined {
  const parts = text.split(".");
  if (parts.length !== 4) return undefined;
  const octets: number[] = [];
  for (const part of parts) {
    if (!/^(?:0|[1-9][0-9]{0,2})$/.test(part)) return undefined;
    const value = Number(part);
    if (value > 255) return undefined;
    octets.push(value);
  }
  return octets;
}

/** Sixteen bytes of an IPv6 address (RFC 4291 text forms, including embedded IPv4), or undefined. */
export function parseIPv6(text: string): number[] | undefined {
  let input = text;
  if (input.startsWith("[") && input.endsWith("]")) input = input.slice(1, -1);
  if (input.includes("%")) return undefined; // zone ids name a local interface; no meaning at the edge
  const halves = input.split("::");
  if (halves.length > 2) return undefined;
  // An embedded IPv4 address fills the low 32 bits (RFC 4291 section 2.2), so only the part of
  // the text that ends the address may end in one: "::1.2.3.4" yes, "1.2.3.4::" no.
  const parseGroups = (part: string, endsAddress: boolean): number[] | undefined => {
    if (part === "") return [];
    const groups = part.split(":");
    const words: number[] = [];
    for (let index = 0; index < groups.length; index++) {
      const group = groups[index] ?? "";
      if (endsAddress && index === groups.length - 1 && group.includes(".")) {
        const octets = parseIPv4(group);
        if (!octets) return undefined;
        words.push(((octets[0] ?? 0) << 8) | (octets[1] ?? 0), ((octets[2] ?? 0) << 8) | (octets[3] ?? 0));
        continue;
      }
      if (!/^[0-9a-fA-F]{1,4}$/.test(group)) return undefined;
      words.push(parseInt(group, 16));
    }
    return words;
  };
  const head = parseGroups(halves[0] ?? "", halves.length === 1);
  const tail = halves.length === 2 ? parseGroups(halves[1] ?? "", true) : [];
  if (!head || !tail) return undefined;
  let words: number[];
  if (halves.length === 2) {
    const missing = 8 - head.length - tail.length;
    if (missing < 1) return undefined;
    words = [...head, ...new Array<number>(missing).fill(0), ...tail];
  } else {
    words = head;
  }
  if (words.length !== 8) return undefined;
  return words.flatMap((word) => [word >> 8, word & 0xff]);
}

/** RFC 5952 text of a 16-byte IPv6 address: lower case, longest zero run shortened to "::". */
export function formatIPv6(bytes: Uint8Array): string {
  const words: number[] = [];
  for (let index = 0; index < 16; index += 2) words.push(((bytes[index] ?? 0) << 8) | (bytes[index + 1] ?? 0));
  let bestStart = -1;
  let bestLength = 0;
  for (let index = 0; index < 8; ) {
    if (words[index] !== 0) {
      index++;
      continue;
    }
    let end = index;
    while (end < 8 && words[end] === 0) end++;
    if (end - index > bestLength && end - index > 1) {
      bestStart = index;
      bestLength = end - index;
    }
    index = end;
  }
  const hex = (list: number[]): string => list.map((word) => word.toString(16)).join(":");
  if (bestStart < 0) return hex(words);
  return `${hex(words.slice(0, bestStart))}::${hex(words.slice(bestStart + bestLength))}`;
}

/** host:port for logs and dialing, with IPv6 in brackets. */
export function formatDestination(destination: Destination): string {
  return destination.type === AddressType.IPv6 ? `[${destination.host}]:${destination.port}` : `${destination.host}:${destination.port}`;
}
