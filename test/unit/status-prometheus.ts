// A strict reader of Prometheus' text exposition format 0.0.4
// (prometheus.io/docs/instrumenting/exposition_formats/), for the tests of /metrics: every line
// must be a HELP, a TYPE or a sample of the grammar; a family's lines come together, its TYPE
// before its samples, once; no sample twice; the text ends with a line feed. It throws on the
// first line that breaks a rule, naming the line.

export type PromSample = { labels: Record<string, string>; value: number };
export type PromFamily = { name: string; type: string | undefined; help: string | undefined; samples: PromSample[] };

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES = new Set(["counter", "gauge", "histogram", "summary", "untyped"]);
const FLOAT = /^[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)$/;

/** The families of `text`, in order; throws on anything the format does not allow. */
export function parsePrometheusText(text: string): Map<string, PromFamily> {
  if (text.length > 0 && !text.endsWith("\n")) throw new Error("the text does not end with a line feed");
  const families = new Map<string, PromFamily>();
  const closed = new Set<string>();
  const seen = new Set<string>();
  let current: string | undefined;
  const familyOf = (name: string, lineNumber: number): PromFamily => {
    if (name !== current) {
      if (current !== undefined) closed.add(current);
      if (closed.has(name)) throw new Error(`line ${lineNumber}: ${name} appears again after other families (a family's lines must be together)`);
      current = name;
    }
    let family = families.get(name);
    if (!family) {
      family = { name, type: undefined, help: undefined, samples: [] };
      families.set(name, family);
    }
    return family;
  };
  const lines = text.split("\n").slice(0, -1);
  lines.forEach((line, index) => {
    const lineNumber = index + 1;
    if (line === "") throw new Error(`line ${lineNumber}: empty line`);
    if (line.startsWith("#")) {
      const match = /^# (HELP|TYPE) (\S+)(?: (.*))?$/.exec(line);
      if (!match) {
        if (/^#\s*(HELP|TYPE)\b/.test(line)) throw new Error(`line ${lineNumber}: malformed ${line}`);
        return; // a comment
      }
      const [, keyword, name = "", rest = ""] = match;
      if (!METRIC_NAME.test(name)) throw new Error(`line ${lineNumber}: bad metric name ${name}`);
      // A summary's or histogram's samples carry suffixes; the families here are counters and gauges.
      const family = familyOf(name, lineNumber);
      if (keyword === "HELP") {
        if (family.help !== undefined) throw new Error(`line ${lineNumber}: second HELP for ${name}`);
        if (/\\[^\\n]/.test(rest.replaceAll("\\\\", ""))) throw new Error(`line ${lineNumber}: HELP escapes only backslash and \\n`);
        family.help = rest.replaceAll("\\n", "\n").replaceAll("\\\\", "\\");
      } else {
        if (family.type !== undefined) throw new Error(`line ${lineNumber}: second TYPE for ${name}`);
        if (family.samples.length > 0) throw new Error(`line ${lineNumber}: TYPE for ${name} after its samples`);
        if (!TYPES.has(rest)) throw new Error(`line ${lineNumber}: unknown type ${rest}`);
        family.type = rest;
      }
      return;
    }
    const sample = parseSampleLine(line, lineNumber);
    const family = familyOf(sample.name, lineNumber);
    const key = `${sample.name}{${Object.entries(sample.labels)
      .sort(([a], [b]) => (a < b ? -1 : 1))
      .map(([name, value]) => `${name}=${JSON.stringify(value)}`)
      .join(",")}}`;
    if (seen.has(key)) throw new Error(`line ${lineNumber}: sample ${key} appears twice`);
    seen.add(key);
    family.samples.push({ labels: sample.labels, value: sample.value });
  });
  return families;
}

function parseSampleLine(line: string, lineNumber: number): { name: string; labels: Record<string, string>; value: number } {
  const fail = (why: string): never => {
    throw new Error(`line ${lineNumber}: ${why}: ${line}`);
  };
  let position = 0;
  const nameMatch = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(line);
  if (!nameMatch) fail("no metric name");
  const name = nameMatch?.[0] ?? "";
  position = name.length;
  const labels: Record<string, string> = {};
  if (line[position] === "{") {
    position++;
    while (line[position] !== "}") {
      const labelMatch = /^[a-zA-Z_][a-zA-Z0-9_]*/.exec(line.slice(position));
      if (!labelMatch) fail("bad label name");
      const labelName = labelMatch?.[0] ?? "";
      if (!LABEL_NAME.test(labelName) || labelName.startsWith("__")) fail(`reserved or bad label name ${labelName}`);
      if (labelName in labels) fail(`label ${labelName} twice`);
      position += labelName.length;
      if (line.slice(position, position + 2) !== '="') fail("label without =\"");
      position += 2;
      let value = "";
      for (;;) {
        const character = line[position];
        if (character === undefined) fail("unterminated label value");
        if (character === '"') break;
        if (character === "\\") {
          const escaped = line[position + 1];
          if (escaped === "\\") value += "\\";
          else if (escaped === '"') value += '"';
          else if (escaped === "n") value += "\n";
          else fail("label value escapes only \\\\, \\\" and \\n");
          position += 2;
          continue;
        }
        value += character;
        position++;
      }
      position++;
      labels[labelName] = value;
      if (line[position] === ",") position++;
      else if (line[position] !== "}") fail("labels not separated by ,");
    }
    position++;
  }
  if (line[position] !== " ") fail("no space before the value");
  const parts = line.slice(position + 1).split(" ");
  if (parts.length < 1 || parts.length > 2) fail("expected a value and at most a timestamp");
  const valueText = parts[0] ?? "";
  let value: number;
  if (valueText === "NaN") value = Number.NaN;
  else if (valueText === "+Inf") value = Number.POSITIVE_INFINITY;
  else if (valueText === "-Inf") value = Number.NEGATIVE_INFINITY;
  else if (FLOAT.test(valueText)) value = Number(valueText);
  else return fail(`bad value ${valueText}`);
  if (parts[1] !== undefined && !/^-?\d+$/.test(parts[1])) fail(`bad timestamp ${parts[1]}`);
  return { name, labels, value };
}

/** Checks the conventions /metrics keeps beyond the grammar: edgesocks_ names, HELP and TYPE on every family, counters named _total. */
export function checkEdgesocksConventions(families: Map<string, PromFamily>): void {
  for (const family of families.values()) {
    if (!family.name.startsWith("edgesocks_")) throw new Error(`${family.name} is not named edgesocks_*`);
    if (family.help === undefined || family.help === "") throw new Error(`${family.name} has no HELP`);
    if (family.type === undefined) throw new Error(`${family.name} has no TYPE`);
    if ((family.type === "counter") !== family.name.endsWith("_total")) throw new Error(`${family.name}: counters, and only counters, end in _total`);
    if (family.samples.length === 0) throw new Error(`${family.name} has no sample`);
  }
}
