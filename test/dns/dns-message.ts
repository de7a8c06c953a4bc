// DNS messages (RFC 1035 section 4) for the tests: a query for an A record, the answer a stub
// resolver gives to it, and a reader for the answers. Uint8Array only, so it runs in workerd
// and in Node alike.

/** The name the stub resolver knows. */
export const KNOWN_NAME = "edge-test.example";
/** What the stub answers for KNOWN_NAME: TEST-NET-1 (RFC 5737), only ever data in an answer. */
export const KNOWN_ADDRESS = "192.0.2.7";

const TYPE_A = 1;
const CLASS_IN = 1;
/** QR (response), RD and RA set; RCODE in the low four bits. */
const RESPONSE_FLAGS = 0x8180;
const RCODE_NXDOMAIN = 3;
const HEADER_BYTES = 12;

/** A standard query with recursion desired for the A record of `name`. */
export function buildQuery(name: string, id: number): Uint8Array {
  const question = encodeQuestion(name);
  const message = new Uint8Array(HEADER_BYTES + question.byteLength);
  const view = new DataView(message.buffer);
  view.setUint16(0, id);
  view.setUint16(2, 0x0100);
  view.setUint16(4, 1);
  message.set(question, HEADER_BYTES);
  return message;
}

/** The stub's answer to `query`: KNOWN_ADDRESS for KNOWN_NAME, NXDOMAIN for any other name. */
export function answerQuery(query: Uint8Array): Uint8Array {
  const { name, end } = readName(query, HEADER_BYTES);
  const question = query.subarray(HEADER_BYTES, end + 4);
  const known = name.toLowerCase() === KNOWN_NAME;
  const record = known ? Uint8Array.of(0xc0, HEADER_BYTES, 0, TYPE_A, 0, CLASS_IN, 0, 0, 0, 60, 0, 4, ...KNOWN_ADDRESS.split(".").map(Number)) : new Uint8Array(0);
  const message = new Uint8Array(HEADER_BYTES + question.byteLength + record.byteLength);
  const view = new DataView(message.buffer);
  view.setUint16(0, new DataView(query.buffer, query.byteOffset).getUint16(0));
  view.setUint16(2, RESPONSE_FLAGS | (known ? 0 : RCODE_NXDOMAIN));
  view.setUint16(4, 1);
  view.setUint16(6, known ? 1 : 0);
  message.set(question, HEADER_BYTES);
  message.set(record, HEADER_BYTES + question.byteLength);
  return message;
}

export type ParsedAnswer = { id: number; rcode: number; name: string; addresses: string[] };

/** Reads an answer to a one-question query: its id, RCODE, question name and A records. */
export function parseAnswer(message: Uint8Array): ParsedAnswer {
  const view = new DataView(message.buffer, message.byteOffset, message.byteLength);
  if (message.byteLength < HEADER_BYTES || (view.getUint16(2) & 0x8000) === 0) throw new Error("not a DNS response");
  const { name, end } = readName(message, HEADER_BYTES);
  let offset = end + 4;
  const addresses: string[] = [];
  for (let index = 0; index < view.getUint16(6); index++) {
    offset = readName(message, offset).end;
    const type = view.getUint16(offset);
    const length = view.getUint16(offset + 8);
    if (type === TYPE_A && length === 4) addresses.push(Array.from(message.subarray(offset + 10, offset + 14)).join("."));
    offset += 10 + length;
  }
  return { id: view.getUint16(0), rcode: view.getUint16(2) & 0x0f, name, addresses };
}

function encodeQuestion(name: string): Uint8Array {
  const bytes: number[] = [];
  for (const label of name.split(".")) bytes.push(label.length, ...Array.from(label, (char) => char.charCodeAt(0)));
  bytes.push(0, 0, TYPE_A, 0, CLASS_IN);
  return Uint8Array.from(bytes);
}

/** The name at `offset` (labels, or a compression pointer) and the offset just past it. */
function readName(message: Uint8Array, offset: number): { name: string; end: number } {
  const labels: string[] = [];
  let position = offset;
  let end: number | undefined;
  for (;;) {
    const length = message[position];
    if (length === undefined) throw new Error("DNS name runs past the message");
    if (length === 0) break;
    if ((length & 0xc0) === 0xc0) {
      end ??= position + 2;
      position = ((length & 0x3f) << 8) | (message[position + 1] ?? 0);
      continue;
    }
    labels.push(String.fromCharCode(...message.subarray(position + 1, position + 1 + length)));
    position += 1 + length;
  }
  return { name: labels.join("."), end: end ?? position + 1 };
}
