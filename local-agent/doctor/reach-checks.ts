// The doctor's first three checks of an edge, below HTTP: its name resolves on this machine, a
// TCP connection reaches it, and (for an https:// or wss:// edge) a TLS handshake with its
// certificate verified as the agent's own connections verify it.

import { lookup } from "node:dns/promises";
import { connect as netConnect, isIP, type Socket } from "node:net";
import { connect as tlsConnect } from "node:tls";
import { errorText } from "../error-text.ts";
import { CHECK_TIMEOUT_MS, CheckName, errorCode, fail, pass, skip, withDeadline, type CheckResult } from "./check.ts";

/** Where an edge is, read from its tunnel URL (ws[s]://host[:port]/…/tunnel). */
export type EdgeAddress = { host: string; port: number; tls: boolean };

/** The host, port and scheme of a tunnel URL; IPv6 without brackets; the scheme's port when none is given. */
export function edgeAddress(tunnelUrl: string): EdgeAddress {
  const url = new URL(tunnelUrl);
  const tls = url.protocol === "wss:";
  const host = url.hostname.replace(/^\[|\]$/g, "");
  return { host, port: url.port === "" ? (tls ? 443 : 80) : Number(url.port), tls };
}

/** host:port with IPv6 in brackets. */
export function hostPort(host: string, port: number): string {
  return isIP(host) === 6 ? `[${host}]:${port}` : `${host}:${port}`;
}

const NAME_FIX = "check the spelling of --edge (npm run deploy prints the Worker's URL) and this machine's DNS settings";

/** The edge's host name resolves here (dns.lookup, as every connection the agent makes resolves it); an IP literal passes as such. */
export function checkName(edge: EdgeAddress): Promise<CheckResult> {
  const name = CheckName.Name;
  if (isIP(edge.host) !== 0) return Promise.resolve(pass(name, `${edge.host} (an IP literal, nothing to resolve)`));
  return withDeadline(name, CHECK_TIMEOUT_MS, NAME_FIX, async () => {
    try {
      const addresses = await lookup(edge.host, { all: true });
      if (addresses.length === 0) return fail(name, `${edge.host} has no address`, NAME_FIX);
      return pass(name, `${edge.host}: ${addresses.map((each) => each.address).join(", ")}`);
    } catch (error) {
      const code = errorCode(error);
      if (code === "ENOTFOUND" || code === "ENODATA") return fail(name, `${edge.host} does not resolve (${code})`, NAME_FIX);
      return fail(name, `looking up ${edge.host} failed: ${errorText(error)}`, "check this machine's network and DNS settings");
    }
  });
}

/** A TCP connection to the edge opens (and is closed at once). */
export function checkTcp(edge: EdgeAddress): Promise<CheckResult> {
  const name = CheckName.Tcp;
  const where = hostPort(edge.host, edge.port);
  const timeoutFix = `a firewall or the network drops connections to ${where}; try another network, or check that the edge runs`;
  return withDeadline(name, CHECK_TIMEOUT_MS, timeoutFix, async () => {
    const startedMs = performance.now();
    const outcome = await settle(netConnect({ host: edge.host, port: edge.port }), "connect", CHECK_TIMEOUT_MS);
    if (outcome.kind === "timeout") return fail(name, `${where} did not answer within ${CHECK_TIMEOUT_MS} ms`, timeoutFix);
    if (outcome.kind === "error") {
      const code = errorCode(outcome.error);
      if (code === "ECONNREFUSED") return fail(name, `${where} refused the connection (nothing listens there)`, `start the edge (npm start runs a local one) or correct the port in --edge`);
      return fail(name, `connecting to ${where} failed: ${errorText(outcome.error)}`, timeoutFix);
    }
    const elapsedMs = Math.round(performance.now() - startedMs);
    const remote = outcome.socket.remoteAddress;
    outcome.socket.destroy();
    return pass(name, `connected to ${remote === undefined ? where : hostPort(remote, edge.port)} in ${elapsedMs} ms`);
  });
}

/** The fix for a TLS error by its code: a clock, an interception, a port without TLS, a name mismatch. */
function tlsFix(code: string | undefined): string {
  switch (code) {
    case "CERT_HAS_EXPIRED":
    case "CERT_NOT_YET_VALID":
      return "check this machine's clock and date (see the clock row); a certificate is judged by them";
    case "DEPTH_ZERO_SELF_SIGNED_CERT":
    case "SELF_SIGNED_CERT_IN_CHAIN":
    case "UNABLE_TO_VERIFY_LEAF_SIGNATURE":
    case "UNABLE_TO_GET_ISSUER_CERT_LOCALLY":
      return "something on this network intercepts TLS (a company proxy, antivirus): use another network, or give Node its CA with NODE_EXTRA_CA_CERTS";
    case "ERR_TLS_CERT_ALTNAME_INVALID":
      return "the certificate is for another name: check the host in --edge";
    case "ERR_SSL_WRONG_VERSION_NUMBER":
    case "ECONNRESET":
      return "the port does not speak TLS: a local edge (wrangler dev) is http://, a deployed Worker https://";
    default:
      return "check the host in --edge, and that nothing on this network intercepts TLS";
  }
}

/** For an https/wss edge: a TLS handshake with the certificate verified against Node's CAs for the edge's name. */
export function checkTls(edge: EdgeAddress): Promise<CheckResult> {
  const name = CheckName.Tls;
  if (!edge.tls) return Promise.resolve(skip(name, "an http:// edge: no TLS to check"));
  const where = hostPort(edge.host, edge.port);
  const timeoutFix = `the edge accepted TCP but not TLS: check the port in --edge`;
  return withDeadline(name, CHECK_TIMEOUT_MS, timeoutFix, async () => {
    const startedMs = performance.now();
    // SNI only for a name (RFC 6066 section 3: never an IP literal).
    const socket = tlsConnect({ host: edge.host, port: edge.port, ALPNProtocols: ["http/1.1"], ...(isIP(edge.host) === 0 ? { servername: edge.host } : {}) });
    const outcome = await settle(socket, "secureConnect", CHECK_TIMEOUT_MS);
    if (outcome.kind === "timeout") return fail(name, `no TLS handshake with ${where} within ${CHECK_TIMEOUT_MS} ms`, timeoutFix);
    if (outcome.kind === "error") {
      const code = errorCode(outcome.error);
      // OpenSSL's message is a trace of file names; its `reason` is the few words that matter.
      const reason = (outcome.error as { reason?: unknown }).reason;
      const why = typeof reason === "string" && reason !== "" ? reason : errorText(outcome.error);
      return fail(name, `TLS with ${where} failed: ${why}${code === undefined ? "" : ` (${code})`}`, tlsFix(code));
    }
    const elapsedMs = Math.round(performance.now() - startedMs);
    const certificate = socket.getPeerCertificate();
    const protocol = socket.getProtocol() ?? "TLS";
    socket.destroy();
    const validTo = certificate.valid_to ? `, certificate valid until ${new Date(certificate.valid_to).toISOString().slice(0, 10)}` : "";
    return pass(name, `${protocol} in ${elapsedMs} ms${validTo}`);
  });
}

type Settled = { kind: "ready"; socket: Socket } | { kind: "error"; error: unknown } | { kind: "timeout" };

/** Waits for `socket`'s `event`, its error or `timeoutMs`; a socket that did not get there is destroyed. */
function settle<T extends Socket>(socket: T, event: "connect" | "secureConnect", timeoutMs: number): Promise<Settled> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      socket.destroy();
      resolve({ kind: "timeout" });
    }, timeoutMs);
    socket.once(event, () => {
      clearTimeout(timer);
      resolve({ kind: "ready", socket });
    });
    socket.once("error", (error) => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ kind: "error", error });
    });
  });
}
