// `edgesocks doctor`'s command line (local-agent/doctor/doctor-args.ts): its own options split
// from the agent's, the agent's read by parseAgentCommand, and a one-line ConfigError for each
// bad input.

import { describe, expect, it } from "vitest";
import { ConfigError } from "../../local-agent/config/config.ts";
import { DEFAULT_CLOUDFLARE_TARGET, DEFAULT_TARGET, parseDoctorCommand, parseTarget, splitDoctorArgs } from "../../local-agent/doctor/doctor-args.ts";
import { AddressType } from "../../worker/protocol/index.ts";

const TOKEN = "doctor-unit-token-0123456789";
/** No config file of this machine's user: XDG_CONFIG_HOME where none can be. */
const ENV = { EDGESOCKS_TOKEN: TOKEN, XDG_CONFIG_HOME: "/nonexistent-edgesocks-doctor-test", HOME: "/nonexistent-edgesocks-doctor-test" };
const EDGE = ["--edge", "http://127.0.0.1:8787"];

function configError(action: () => unknown): string {
  try {
    action();
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as Error).message).not.toContain("\n");
    return (error as Error).message;
  }
  throw new Error("expected a ConfigError");
}

describe("splitDoctorArgs", () => {
  it("takes --target and --cloudflare-target with their values, both spellings, and leaves the agent's options in order", () => {
    const { doctor, agentArgv } = splitDoctorArgs(["--edge", "http://a:1", "--target", "localhost:9", "--zero-rtt", "--cloudflare-target=127.0.0.2:443", "--edge", "http://b:2"]);
    expect(doctor).toEqual({ help: false, target: "localhost:9", cloudflareTarget: "127.0.0.2:443" });
    expect(agentArgv).toEqual(["--edge", "http://a:1", "--zero-rtt", "--edge", "http://b:2"]);
  });

  it("does not take an agent option's value that reads like a doctor option", () => {
    const { doctor, agentArgv } = splitDoctorArgs(["--config", "--target=x", "--listen", "127.0.0.1:0"]);
    expect(doctor.target).toBeUndefined();
    expect(agentArgv).toEqual(["--config", "--target=x", "--listen", "127.0.0.1:0"]);
  });
});

describe("parseDoctorCommand", () => {
  it("reads the agent's configuration as the agent does, every --edge in order, and defaults both targets", () => {
    const command = parseDoctorCommand([...EDGE, "--edge", "https://second.example.workers.dev", "--on-cloudflare", "direct", "--open-timeout-ms", "2000"], ENV);
    if (command.kind !== "check") throw new Error(`expected a check, got ${command.kind}`);
    expect(command.config.edges.map((edge) => edge.tunnelUrl)).toEqual(["ws://127.0.0.1:8787/tunnel", "wss://second.example.workers.dev/tunnel"]);
    expect(command.config.token).toBe(TOKEN);
    expect(command.config.onCloudflare).toBe("direct");
    expect(command.config.openTimeoutMs).toBe(2000);
    expect(command.target).toEqual(parseTarget(DEFAULT_TARGET, "--target"));
    expect(command.cloudflareTarget).toEqual(parseTarget(DEFAULT_CLOUDFLARE_TARGET, "--cloudflare-target"));
  });

  it("parses --target as HOST:PORT: a name, IPv4, or IPv6 in brackets", () => {
    const target = (text: string) => {
      const command = parseDoctorCommand([...EDGE, "--target", text], ENV);
      return command.kind === "check" ? command.target : undefined;
    };
    expect(target("LocalHost:4000")).toEqual({ type: AddressType.Domain, host: "localhost", port: 4000 });
    expect(target("127.0.0.1:9")).toEqual({ type: AddressType.IPv4, host: "127.0.0.1", port: 9 });
    expect(target("[::1]:443")).toEqual({ type: AddressType.IPv6, host: "::1", port: 443 });
  });

  it("answers --help (and -h) with the doctor's help, before reading the rest", () => {
    expect(parseDoctorCommand(["--help"], {})).toEqual({ kind: "help" });
    expect(parseDoctorCommand(["--edge", "not a url", "-h"], {})).toEqual({ kind: "help" });
  });

  it.each([
    [["--target", "example.com"], '--target "example.com" names no port; expected HOST:PORT, e.g. example.com:443'],
    [["--target", "example.com:0"], '--target port "0" is outside 1..65535; expected HOST:PORT, e.g. example.com:443'],
    [["--cloudflare-target", "[nope]:443"], '--cloudflare-target "[nope]" is not an IPv6 address; expected HOST:PORT, e.g. example.com:443'],
    [["--target"], "--target needs a value: --target HOST:PORT; see edgesocks doctor --help"],
    [["--tagret", "x:1"], "unknown option --tagret (did you mean --target?); see edgesocks doctor --help"],
    [["--pool-size"], "--pool-size needs a value: --pool-size N; see edgesocks doctor --help"],
    [["stray"], 'unexpected argument "stray"; this command takes only options (see edgesocks doctor --help)'],
  ])("refuses %j with one line", (args, message) => {
    expect(configError(() => parseDoctorCommand([...EDGE, ...args], ENV))).toBe(message);
  });

  it("refuses a configuration the agent refuses, with the agent's message", () => {
    expect(configError(() => parseDoctorCommand(EDGE, { ...ENV, EDGESOCKS_TOKEN: undefined }))).toBe("no token: set EDGESOCKS_TOKEN in the environment or pass --token-file PATH");
    expect(configError(() => parseDoctorCommand(["--edge", "ftp://x"], ENV))).toBe("--edge must be an http, https, ws or wss URL, not ftp://");
  });
});
