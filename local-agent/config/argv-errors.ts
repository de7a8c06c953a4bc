// One-line answers for a command line that does not parse: which flag is unknown (and the one
// probably meant), which flag lacks its value, which argument is stray. Pure: argv in, a message
// out. parseArgs' own messages are multi-line and speak of positionals; these name the flag.
//
// A stray argument is quoted only when it cannot be a secret: one that follows --user may be the
// password of `--user alice hunter2`, and one as long as a token (MIN_TOKEN_LENGTH) may be the
// token typed where a flag was meant; those are named by position instead.

import { parseArgs } from "node:util";
import { MIN_TOKEN_LENGTH } from "../../worker/protocol/index.ts";

export type OptionSpecs = Readonly<Record<string, { readonly type: "string" | "boolean"; readonly short?: string; readonly multiple?: boolean }>>;

/** What a message needs to know of the command: its options, its --help text, how to name its help. */
export type ArgvContext = {
  options: OptionSpecs;
  /** The command's --help text: a flag's value placeholder is read from its `--flag VALUE` line. */
  usage: string;
  /** How the user asks for the command's help, e.g. "edgesocks --help". */
  helpCommand: string;
  /** Options after which a stray argument may be a secret (never quoted). */
  secretFollowers: readonly string[];
};

/** The farthest an unknown option may be from a known one to be suggested (edits). */
const MAX_SUGGESTION_DISTANCE = 2;

/**
 * The one-line reason `argv` does not parse under `context.options`, or undefined when it does.
 * Problems are reported in argv order; no message quotes a value that could be a secret.
 */
export function argvProblem(argv: readonly string[], context: ArgvContext): string | undefined {
  const { tokens } = parseArgs({ args: [...argv], options: context.options, strict: false, allowPositionals: true, tokens: true });
  const help = `see ${context.helpCommand}`;
  for (const [position, token] of tokens.entries()) {
    if (token.kind === "option") {
      const spec = Object.hasOwn(context.options, token.name) ? context.options[token.name] : undefined;
      if (spec === undefined) {
        const suggestion = token.rawName.startsWith("--") ? closestOption(token.name, Object.keys(context.options)) : undefined;
        return `unknown option ${token.rawName}${suggestion === undefined ? "" : ` (did you mean --${suggestion}?)`}; ${help}`;
      }
      const flag = `--${token.name}`;
      if (spec.type === "boolean" && token.value !== undefined) return `${flag} takes no value; ${help}`;
      if (spec.type === "string") {
        const form = `${flag} ${placeholder(token.name, context.usage)}`;
        if (token.value === undefined) return `${flag} needs a value: ${form}; ${help}`;
        // parseArgs' "ambiguous": `--edge --listen X` took --listen for --edge's value.
        if (!token.inlineValue && token.value.length > 1 && token.value.startsWith("-")) {
          const next = token.value.startsWith("--") && Object.hasOwn(context.options, token.value.slice(2).split("=")[0] ?? "") ? `the option ${token.value.split("=")[0]}` : 'an argument that starts with "-"';
          return `${flag} needs a value: ${form}, not ${next}; a value that starts with "-" goes as ${flag}=VALUE`;
        }
      }
    }
    if (token.kind === "positional") return strayArgument(token, tokens[position - 1], context);
  }
  return undefined;
}

type Token = ReturnType<typeof parseArgs>["tokens"] extends (infer T)[] | undefined ? T : never;

/** The message for a stray argument: quoted when it cannot be a secret, else named by position. */
function strayArgument(token: Extract<Token, { kind: "positional" }>, previous: Token | undefined, context: ArgvContext): string {
  const position = `argument ${token.index + 1}`;
  const onlyOptions = `this command takes only options (see ${context.helpCommand})`;
  if (previous?.kind === "option" && context.secretFollowers.includes(previous.name)) {
    return `unexpected ${position}, not shown since it follows --${previous.name} and may be a password; --${previous.name} takes ${placeholder(previous.name, context.usage)} as one argument`;
  }
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(token.value)) return `unexpected ${position}, which looks like a URL: the edge goes in --edge URL`;
  if (token.value.length >= MIN_TOKEN_LENGTH) {
    return `unexpected ${position}, not shown since it may be the token (the token comes from EDGESOCKS_TOKEN or --token-file); ${onlyOptions}`;
  }
  return `unexpected argument ${JSON.stringify(token.value)}; ${onlyOptions}`;
}

/** The value placeholder --help shows for `name` (`--edge URL` -> URL), or VALUE. */
function placeholder(name: string, usage: string): string {
  const escaped = name.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  return new RegExp(`--${escaped} ([A-Z][A-Z0-9_:|]*)`).exec(usage)?.[1] ?? "VALUE";
}

/** The known option `name` was probably meant as: a few edits away, or one it is the first word of. */
function closestOption(name: string, known: readonly string[]): string | undefined {
  let best: { option: string; distance: number } | undefined;
  for (const option of known) {
    const distance = option.startsWith(`${name}-`) ? 1 : editDistance(name, option);
    if (distance <= MAX_SUGGESTION_DISTANCE && (best === undefined || distance < best.distance)) best = { option, distance };
  }
  return best?.option;
}

/** Levenshtein distance between two short strings. */
function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, index) => index);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min((previous[j] ?? 0) + 1, (current[j - 1] ?? 0) + 1, (previous[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    previous = current;
  }
  return previous[b.length] ?? 0;
}
