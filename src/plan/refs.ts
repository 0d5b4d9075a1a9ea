/**
 * Secret references in plan values: `${env:NAME}` and `${file:PATH}`, alone or inside a larger
 * string (`postgres://app:${env:PGPASSWORD}@db/ehr`). References are checked for syntax when the
 * plan is validated and resolved only when a value is used; resolved values are never printed,
 * logged or stored. A file path is relative to the plan's folder.
 */
import { readFileSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import { UsageError } from '../errors.js';

export type Reference = { provider: 'env'; name: string } | { provider: 'file'; path: string };
export type StringPart = { kind: 'text'; text: string } | { kind: 'ref'; ref: Reference; raw: string };

const REF = /\$\{([^}]*)\}/g;
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

export class ReferenceSyntaxError extends Error {}

export function parseReferences(value: string): StringPart[] {
  const parts: StringPart[] = [];
  let last = 0;
  for (const m of value.matchAll(REF)) {
    const at = m.index;
    if (at > last) parts.push({ kind: 'text', text: value.slice(last, at) });
    const body = m[1]!;
    const colon = body.indexOf(':');
    const provider = colon < 0 ? body : body.slice(0, colon);
    const arg = colon < 0 ? '' : body.slice(colon + 1);
    if (provider === 'env') {
      if (!ENV_NAME.test(arg)) {
        throw new ReferenceSyntaxError(`"${m[0]}" is not a valid reference: an environment variable name is letters, digits and _`);
      }
      parts.push({ kind: 'ref', ref: { provider: 'env', name: arg }, raw: m[0] });
    } else if (provider === 'file') {
      if (arg.trim() === '') throw new ReferenceSyntaxError(`"${m[0]}" is not a valid reference: the file path is empty`);
      parts.push({ kind: 'ref', ref: { provider: 'file', path: arg }, raw: m[0] });
    } else {
      throw new ReferenceSyntaxError(`"${m[0]}" is not a valid reference: use \${env:NAME} or \${file:PATH}`);
    }
    last = at + m[0].length;
  }
  if (last < value.length) parts.push({ kind: 'text', text: value.slice(last) });
  const literal = parts.map((p) => (p.kind === 'text' ? p.text : '')).join('');
  if (/\$\{/.test(literal)) throw new ReferenceSyntaxError('unclosed "${" in value');
  return parts;
}

export function hasReference(value: string): boolean {
  return parseReferences(value).some((p) => p.kind === 'ref');
}

export interface ResolveContext {
  env: Record<string, string | undefined>;
  /** Folder that ${file:} paths are relative to (the plan's folder). */
  baseDir: string;
  /** Where the value sits in the plan, for messages: "source.postgres". */
  where: string;
}

export function resolveReferences(value: string, ctx: ResolveContext): string {
  return parseReferences(value)
    .map((p) => (p.kind === 'text' ? p.text : resolveOne(p.ref, ctx)))
    .join('');
}

function resolveOne(ref: Reference, ctx: ResolveContext): string {
  if (ref.provider === 'env') {
    const v = ctx.env[ref.name];
    if (v === undefined || v === '') {
      throw new UsageError(`${ctx.where}: environment variable ${ref.name} is not set`, {
        hint: `export ${ref.name}=... before running cloudshift (the plan refers to it as \${env:${ref.name}})`,
      });
    }
    return v;
  }
  const path = isAbsolute(ref.path) ? ref.path : resolve(ctx.baseDir, ref.path);
  try {
    return readFileSync(path, 'utf8').replace(/\r?\n$/, '');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    throw new UsageError(`${ctx.where}: cannot read ${path} (${code}) for \${file:${ref.path}}`, {
      cause: err,
      hint: 'check that the file exists and that this user can read it',
    });
  }
}
