// The --config file: JSON text in, checked settings out. Pure apart from resolving relative
// paths against the file's directory; reading the file and the passwords it points to is
// config.ts's and users-config.ts's job. Every error names the file, the field and the reason,
// and never a secret's value.

import { dirname, resolve } from "node:path";
import { ConfigError, LIMIT_NAMES, LOG_LEVELS, ON_CLOUDFLARE_MODES, distinctEdges, parseEdgeUrl, type EdgeTarget, parseLimit, parseListen, type Limits, type LogLevel, type OnCloudflareMode } from "./config-values.ts";
import { BYPASS_MODES, ROUTES, RuleError, buildRule, type BypassMode, type RouteRule } from "./routing.ts";
import { checkPassword, checkUserName, type UserSource } from "./users-config.ts";

/** What a config file sets; absent fields are left to flags and defaults. */
export type FileSettings = {
  listen?: { host: string; port: number };
  /** "edge": one URL or a list of them, tried in order of health (README: "Several edges"). */
  edges?: EdgeTarget[];
  /** Absolute, or relative to the working directory: already resolved against the file's directory. */
  tokenFile?: string;
  users: UserSource[];
  rules: RouteRule[];
  bypass?: BypassMode;
  limits: Partial<Limits>;
  logLevel?: LogLevel;
  zeroRtt?: boolean;
  onCloudflare?: OnCloudflareMode;
};

const TOP_FIELDS = ["listen", "edge", "tokenFile", "users", "rules", "bypass", "limits", "logLevel", "zeroRtt", "onCloudflare"];
const USER_FIELDS = ["name", "password", "passwordEnv", "passwordFile"];
const PASSWORD_FIELDS = ["password", "passwordEnv", "passwordFile"];
const MATCHER_FIELDS = ["suffix", "host", "cidr", "port"];
const RULE_FIELDS = ["route", ...MATCHER_FIELDS];

type JsonObject = Record<string, unknown>;

/** Parses and checks a config file's text; `file` names it in errors and anchors its relative paths. */
export function parseConfigFile(text: string, file: string): FileSettings {
  const at = (field: string) => `${file}: ${field}`;
  const root = parseJson(text, file);
  if (!isObject(root)) throw new ConfigError(`${file}: must hold a JSON object ({ ... }), not ${typeName(root)}`);
  if (Object.hasOwn(root, "token")) {
    throw new ConfigError(`${at("token")}: a token in the config file is not supported; put it in a file named by tokenFile, or in EDGESOCKS_TOKEN`);
  }
  checkFields(root, TOP_FIELDS, file, "");
  const baseDir = dirname(file);
  const settings: FileSettings = { users: [], rules: [], limits: {} };
  const listen = optionalString(root, "listen", at("listen"));
  if (listen !== undefined) settings.listen = parseListen(listen, at("listen"));
  if (Object.hasOwn(root, "edge")) settings.edges = parseEdges(root.edge, at("edge"));
  const tokenFile = optionalString(root, "tokenFile", at("tokenFile"));
  if (tokenFile !== undefined) settings.tokenFile = resolve(baseDir, nonEmpty(tokenFile, at("tokenFile")));
  const bypass = optionalString(root, "bypass", at("bypass"));
  if (bypass !== undefined) settings.bypass = oneOf(bypass, BYPASS_MODES, at("bypass"));
  const logLevel = optionalString(root, "logLevel", at("logLevel"));
  if (logLevel !== undefined) settings.logLevel = oneOf(logLevel, LOG_LEVELS, at("logLevel"));
  const onCloudflare = optionalString(root, "onCloudflare", at("onCloudflare"));
  if (onCloudflare !== undefined) settings.onCloudflare = oneOf(onCloudflare, ON_CLOUDFLARE_MODES, at("onCloudflare"));
  if (Object.hasOwn(root, "zeroRtt")) {
    if (typeof root.zeroRtt !== "boolean") throw new ConfigError(`${at("zeroRtt")}: must be true or false, not ${typeName(root.zeroRtt)}`);
    settings.zeroRtt = root.zeroRtt;
  }
  if (Object.hasOwn(root, "limits")) {
    const limits = expectObject(root.limits, at("limits"));
    checkFields(limits, LIMIT_NAMES, file, "limits.");
    for (const name of LIMIT_NAMES) {
      if (!Object.hasOwn(limits, name)) continue;
      const value = limits[name];
      if (typeof value !== "number") throw new ConfigError(`${at(`limits.${name}`)}: must be a number, not ${typeName(value)}`);
      settings.limits[name] = parseLimit(name, value, at(`limits.${name}`));
    }
  }
  if (Object.hasOwn(root, "users")) {
    settings.users = expectArray(root.users, at("users")).map((entry, index) => parseUser(entry, `users[${index}]`, file, baseDir));
    settings.users.forEach((user, index) => {
      const first = settings.users.findIndex((other) => other.name === user.name);
      if (first !== index) throw new ConfigError(`${at(`users[${index}].name`)}: user "${user.name}" is already users[${first}]`);
    });
  }
  if (Object.hasOwn(root, "rules")) {
    settings.rules = expectArray(root.rules, at("rules")).map((entry, index) => parseRule(entry, `rules[${index}]`, file));
  }
  return settings;
}

function parseUser(entry: unknown, field: string, file: string, baseDir: string): UserSource {
  const at = (sub: string) => `${file}: ${field}${sub}`;
  const user = expectObject(entry, at(""));
  checkFields(user, USER_FIELDS, file, `${field}.`);
  if (!Object.hasOwn(user, "name")) throw new ConfigError(`${at("")}: needs a name`);
  const name = expectString(user.name, at(".name"));
  checkUserName(name, at(".name"));
  const given = PASSWORD_FIELDS.filter((key) => Object.hasOwn(user, key));
  if (given.length !== 1) {
    const problem = given.length === 0 ? "needs one of" : "takes only one of";
    throw new ConfigError(`${at("")}: user "${name}" ${problem} password, passwordEnv or passwordFile`);
  }
  const label = `${file} ${field}`;
  if (given[0] === "password") {
    const password = expectString(user.password, at(".password"));
    checkPassword(password, at(".password"));
    return { name, label, password: { kind: "literal", password } };
  }
  if (given[0] === "passwordEnv") {
    const variable = expectString(user.passwordEnv, at(".passwordEnv"));
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(variable)) {
      // Not quoted: a value that is no variable name may well be the password itself, put in the wrong field.
      throw new ConfigError(`${at(".passwordEnv")}: must name an environment variable (letters, digits and _, not starting with a digit)`);
    }
    return { name, label, password: { kind: "env", variable, label: at(".passwordEnv") } };
  }
  const path = nonEmpty(expectString(user.passwordFile, at(".passwordFile")), at(".passwordFile"));
  return { name, label, password: { kind: "file", path: resolve(baseDir, path), label: at(".passwordFile") } };
}

function parseRule(entry: unknown, field: string, file: string): RouteRule {
  const at = (sub: string) => `${file}: ${field}${sub}`;
  const rule = expectObject(entry, at(""));
  checkFields(rule, RULE_FIELDS, file, `${field}.`);
  if (!Object.hasOwn(rule, "route")) throw new ConfigError(`${at("")}: needs a route (${ROUTES.join(", ")})`);
  const route = oneOf(expectString(rule.route, at(".route")), ROUTES, at(".route"));
  const matchers: Record<string, string | number> = {};
  for (const kind of MATCHER_FIELDS) {
    if (!Object.hasOwn(rule, kind)) continue;
    const value = rule[kind];
    if (typeof value === "number" && kind === "port") matchers[kind] = value;
    else matchers[kind] = expectString(value, at(`.${kind}`), kind === "port" ? "a number or a string N-M" : "a string");
  }
  const kinds = Object.keys(matchers);
  if (kinds.length === 0) throw new ConfigError(`${at("")}: needs at least one of ${MATCHER_FIELDS.join(", ")} (a rule matching everything would hide all after it)`);
  // The command-line form, so log lines read the same whichever way a rule was given.
  const text = `${route}:${kinds.map((kind) => `${kind}=${matchers[kind]}`).join(",")}`;
  for (const kind of kinds) {
    try {
      buildRule(route, { [kind]: matchers[kind] ?? "" }, text);
    } catch (error) {
      if (!(error instanceof RuleError)) throw error;
      throw new ConfigError(`${at(`.${kind}`)}: ${error.message.replace(/^rule ".*?": /, "")}`);
    }
  }
  return buildRule(route, matchers, text);
}

/** JSON.parse, with V8's message reduced to a reason and a line and column: V8 may quote the text, which can hold a password. */
function parseJson(text: string, file: string): unknown {
  try {
    return JSON.parse(text);
  } catch (error) {
    const message = error instanceof Error ? error.message : "";
    const positioned = /^(.*?) (?:in JSON )?at position (\d+)/.exec(message);
    let reason = "unexpected character";
    if (positioned) {
      const before = text.slice(0, Number(positioned[2]));
      const line = before.split("\n").length;
      const column = before.length - before.lastIndexOf("\n");
      reason = `${(positioned[1] ?? "").replace(/^./, (first) => first.toLowerCase())} at line ${line} column ${column}`;
    } else if (/end of JSON input/.test(message)) {
      reason = "unexpected end of input";
    }
    throw new ConfigError(`${file}: is not valid JSON: ${reason}`);
  }
}

function checkFields(object: JsonObject, known: readonly string[], file: string, prefix: string): void {
  for (const key of Object.keys(object)) {
    if (!known.includes(key)) throw new ConfigError(`${file}: ${prefix}${key}: unknown field (expected ${known.join(", ")})`);
  }
}

function isObject(value: unknown): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function expectObject(value: unknown, label: string): JsonObject {
  if (!isObject(value)) throw new ConfigError(`${label}: must be an object, not ${typeName(value)}`);
  return value;
}

function expectArray(value: unknown, label: string): unknown[] {
  if (!Array.isArray(value)) throw new ConfigError(`${label}: must be an array, not ${typeName(value)}`);
  return value;
}

function expectString(value: unknown, label: string, expected = "a string"): string {
  if (typeof value !== "string") throw new ConfigError(`${label}: must be ${expected}, not ${typeName(value)}`);
  return value;
}

function optionalString(object: JsonObject, key: string, label: string): string | undefined {
  return Object.hasOwn(object, key) ? expectString(object[key], label) : undefined;
}

function nonEmpty(value: string, label: string): string {
  if (value === "") throw new ConfigError(`${label}: must not be empty`);
  return value;
}

function oneOf<T extends string>(value: string, allowed: readonly T[], label: string): T {
  if (!(allowed as readonly string[]).includes(value)) throw new ConfigError(`${label}: must be one of ${allowed.join(", ")}, not "${value}"`);
  return value as T;
}

/** The JSON type of a value, for messages: never the value itself, which may be a secret. */
function typeName(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  if (typeof value === "object") return "an object";
  return `a ${typeof value}`;
}

/** "edge" as one URL or a non-empty list of distinct URLs. */
function parseEdges(value: unknown, label: string): EdgeTarget[] {
  const texts = Array.isArray(value) ? value : [value];
  if (texts.length === 0) throw new ConfigError(`${label}: must name at least one edge URL`);
  const edges = texts.map((text, index) => {
    const where = Array.isArray(value) ? `${label}[${index}]` : label;
    if (typeof text !== "string") throw new ConfigError(`${where}: must be a URL string${Array.isArray(value) ? "" : " or a list of them"}, not ${typeName(text)}`);
    return parseEdgeUrl(text, where);
  });
  return distinctEdges(edges, label);
}
