/**
 * Plan text → trusted Plan. YAML is parsed to `unknown` with source positions, validated by the
 * zod schema and the semantic rules, and every problem is collected with its file, line, column
 * and YAML path before anything throws (graphile-migrate's parseSettings). Nothing past this
 * module sees the raw form.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { LineCounter, isMap, isNode, isPair, isScalar, isSeq, parseDocument, type Document } from 'yaml';
import { z } from 'zod';
import { CloudshiftError, ExitCode, messageOf, UsageError } from '../errors.js';
import { redact } from '../redact.js';
import { applyDefaults, type Plan } from './defaults.js';
import { planSchema, type PlanInput } from './schema.js';
import { checkSemantics } from './semantics.js';
import { closest } from './suggest.js';

/** Uses of anchored values a plan may make (the yaml library counts the nodes each expands to). */
const MAX_ALIAS_COUNT = 10_000;

export interface PlanProblem {
  /** YAML path, e.g. `tables[0].batch.rows`; empty for the document itself. */
  path: string;
  line: number;
  column: number;
  message: string;
}

export interface LoadedPlan {
  file: string;
  /** Folder ${file:} references are relative to. */
  dir: string;
  /** SHA-256 of the validated plan, references unresolved: a changed plan changes it. */
  fingerprint: string;
  plan: Plan;
}

export class PlanInvalidError extends CloudshiftError {
  constructor(
    readonly file: string,
    readonly problems: PlanProblem[],
  ) {
    super('CS_PLAN_INVALID', ExitCode.invalid, `${file}: the plan has ${problems.length} problem${problems.length === 1 ? '' : 's'}`, {
      hint: `run \`cloudshift plan validate ${file}\` to see them all`,
    });
  }
}

export type ValidationResult =
  { valid: true; input: PlanInput; problems: [] } | { valid: false; input: undefined; problems: PlanProblem[] };

type Path = Array<string | number>;

export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const p of path) {
    if (typeof p === 'number') out += `[${p}]`;
    else out += out ? `.${String(p)}` : String(p);
  }
  return out;
}

export function validatePlanText(text: string): ValidationResult {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  const at = (offset: number) => {
    const pos = lineCounter.linePos(offset);
    return { line: pos.line, column: pos.col };
  };

  // An unknown tag (`!secret …`) is only a warning to the YAML library, which then reads the
  // value as if untagged: in a plan it is a mistake, and never a way to reference a secret.
  const tags = doc.warnings.filter((w) => w.code === 'TAG_RESOLVE_FAILED');
  if (doc.errors.length > 0 || tags.length > 0) {
    const syntax = (e: (typeof doc.errors)[number]) =>
      e.code === 'RESOURCE_EXHAUSTION' ? 'YAML nested too deeply to read' : `YAML syntax: ${firstLine(e.message)}`;
    const tag = (w: (typeof doc.warnings)[number]) =>
      `unknown YAML tag ${text.slice(w.pos[0], w.pos[1])}: a plan is plain YAML (a secret is referenced as "\${env:NAME}")`;
    return {
      valid: false,
      input: undefined,
      problems: [
        // Nesting too deep is reported once, where it is first found (the library repeats it as it unwinds).
        ...doc.errors
          .filter((e, i, all) => e.code !== 'RESOURCE_EXHAUSTION' || all.findIndex((x) => x.code === e.code) === i)
          .map((e) => ({ path: '', ...at(e.pos[0]), message: syntax(e) })),
        ...tags.map((w) => ({ path: '', ...at(w.pos[0]), message: tag(w) })),
      ],
    };
  }

  let data: unknown;
  try {
    data = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
  } catch (err) {
    // The yaml library's guard against alias bombs (a few aliases expanding to millions of nodes).
    const message = `YAML aliases expand too far (more than ${MAX_ALIAS_COUNT} uses of anchored values): ${firstLine(messageOf(err))}`;
    return { valid: false, input: undefined, problems: [{ path: '', line: 1, column: 1, message }] };
  }
  if (data === null || data === undefined) {
    return { valid: false, input: undefined, problems: [{ path: '', line: 1, column: 1, message: 'the plan is empty' }] };
  }

  const parsed = planSchema.safeParse(data);
  const problems: Array<PlanProblem & { meant?: string }> = [];
  if (!parsed.success) {
    for (const issue of parsed.error.issues) {
      const path = issue.path.filter((p): p is string | number => typeof p !== 'symbol');
      if (issue.code === 'unrecognized_keys') {
        for (const key of issue.keys) {
          const suggestion = closest(key, knownKeysAt(path));
          problems.push({
            path: formatPath([...path, key]),
            ...at(keyOffset(doc, path, key)),
            message: `unknown key "${key}"${suggestion ? `; did you mean "${suggestion}"?` : ''}`,
            ...(suggestion ? { meant: formatPath([...path, suggestion]) } : {}),
          });
        }
      } else {
        // A bad mapping key is pointed at where the key is written.
        const offset =
          issue.code === 'invalid_key' ? keyOffset(doc, path.slice(0, -1), String(path[path.length - 1])) : valueOffset(doc, path);
        problems.push({ path: formatPath(path), ...at(offset), message: describeIssue(issue, data, path) });
      }
    }
  } else {
    for (const p of checkSemantics(parsed.data)) {
      problems.push({ path: formatPath(p.path), ...at(valueOffset(doc, p.path)), message: p.message });
    }
  }
  // A misspelt required key is reported once: as the unknown key, with its suggestion.
  const meant = new Set(problems.map((p) => p.meant).filter((m): m is string => m !== undefined));
  const reported = problems.filter((p) => !(p.message === 'is required' && meant.has(p.path))).map(({ meant: _m, ...p }) => p);
  reported.sort((a, b) => a.line - b.line || a.column - b.column);
  if (reported.length > 0 || !parsed.success) return { valid: false, input: undefined, problems: reported };
  return { valid: true, input: parsed.data, problems: [] };
}

export async function loadPlan(file: string): Promise<LoadedPlan> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    throw new UsageError(`cannot read plan ${file} (${code})`, { cause: err, hint: 'give the path of a plan YAML file' });
  }
  const result = validatePlanText(text);
  if (!result.valid) throw new PlanInvalidError(file, result.problems);
  return {
    file,
    dir: dirname(resolve(file)),
    fingerprint: fingerprintOf(result.input),
    plan: applyDefaults(result.input),
  };
}

export function fingerprintOf(input: PlanInput): string {
  const { $schema: _ignored, ...rest } = input;
  return createHash('sha256').update(canonicalJson(rest)).digest('hex');
}

function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    const entries = Object.entries(v as Record<string, unknown>)
      .filter(([, x]) => x !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, x]) => `${JSON.stringify(k)}:${canonicalJson(x)}`).join(',')}}`;
  }
  return JSON.stringify(v);
}

function firstLine(s: string): string {
  return s.split('\n')[0]!.trim();
}

function valueAt(data: unknown, path: Path): unknown {
  let cur: unknown = data;
  for (const p of path) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<string | number, unknown>)[p];
  }
  return cur;
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'a mapping';
  if (typeof value === 'string') {
    // A literal connection string put where a mapping belongs must not be echoed with its password.
    const shown = redact(value);
    return `the string ${JSON.stringify(shown.length > 40 ? `${shown.slice(0, 40)}…` : shown)}`;
  }
  return `${typeof value} ${String(value)}`;
}

function describeIssue(issue: z.core.$ZodIssue, data: unknown, path: Path): string {
  const value = valueAt(data, path);
  switch (issue.code) {
    case 'invalid_type': {
      if (value === undefined) return 'is required';
      const named: Record<string, string> = { array: 'a list', object: 'a mapping', int: 'a whole number', number: 'a number' };
      const expected = named[issue.expected] ?? `a ${issue.expected}`;
      return `expected ${expected}, got ${describe(value)}`;
    }
    case 'invalid_value':
      return `must be ${issue.values.map((v) => JSON.stringify(v)).join(' or ')}, got ${describe(value)}`;
    case 'too_small':
      if (issue.origin === 'string') return 'must not be empty';
      return `must be ${issue.inclusive === false ? 'greater than' : 'at least'} ${String(issue.minimum)}, got ${describe(value)}`;
    case 'too_big':
      return `must be at most ${String(issue.maximum)}, got ${describe(value)}`;
    case 'invalid_format':
      return issue.format === 'url' ? `must be a URL, got ${describe(value)}` : `${issue.message}, got ${describe(value)}`;
    case 'invalid_key':
      // A mapping's key (a metadata or tag name): what is wrong with it, from its own check.
      return issue.issues[0]?.message ?? issue.message;
    default:
      return issue.code === 'custom' && issue.params?.['showValue'] === true ? `${issue.message}, got ${describe(value)}` : issue.message;
  }
}

/** Keys the schema allows at a path, for "did you mean". */
function knownKeysAt(path: Path): string[] {
  let schema: z.ZodType | undefined = planSchema;
  for (const p of path) {
    schema = schema && unwrap(schema);
    if (schema instanceof z.ZodObject) schema = (schema.shape as Record<string, z.ZodType>)[String(p)];
    else if (schema instanceof z.ZodArray) schema = schema.element as z.ZodType;
    else if (schema instanceof z.ZodRecord) schema = schema.valueType as z.ZodType;
    else return [];
  }
  schema = schema && unwrap(schema);
  return schema instanceof z.ZodObject ? Object.keys(schema.shape) : [];
}

function unwrap(schema: z.ZodType): z.ZodType {
  let s = schema;
  while (s instanceof z.ZodOptional || s instanceof z.ZodDefault || s instanceof z.ZodNullable) s = s.unwrap() as z.ZodType;
  return s;
}

/** Offset of the deepest node on the path that exists (a missing key points at its parent). */
function valueOffset(doc: Document, path: Path): number {
  for (let n = path.length; n >= 0; n -= 1) {
    const node = doc.getIn(path.slice(0, n), true);
    if (isNode(node) && node.range) return node.range[0];
  }
  return 0;
}

function keyOffset(doc: Document, path: Path, key: string): number {
  const parent = path.length === 0 ? doc.contents : doc.getIn(path, true);
  if (isMap(parent)) {
    for (const pair of parent.items) {
      if (isPair(pair) && isScalar(pair.key) && String(pair.key.value) === key && pair.key.range) return pair.key.range[0];
    }
  }
  if (isSeq(parent) || isMap(parent)) return parent.range?.[0] ?? 0;
  return valueOffset(doc, path);
}
