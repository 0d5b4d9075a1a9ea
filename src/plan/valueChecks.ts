/**
 * Checks on single plan values that zod runs as refinements: reference syntax, literal secrets,
 * template syntax. Cross-field rules live in semantics.ts.
 */
import type { z } from 'zod';
import { ReferenceSyntaxError, parseReferences, type StringPart } from './refs.js';
import { TemplateSyntaxError, parseTemplate } from './templates.js';

type Ctx = z.RefinementCtx;
const HOLE = '\u0000';

function partsOrIssue(value: string, ctx: Ctx): StringPart[] | null {
  try {
    return parseReferences(value);
  } catch (err) {
    if (err instanceof ReferenceSyntaxError) {
      ctx.addIssue({ code: 'custom', message: err.message });
      return null;
    }
    throw err;
  }
}

/** The value with every reference replaced by a hole, so literal text can be inspected. */
function literalShape(parts: StringPart[]): string {
  return parts.map((p) => (p.kind === 'text' ? p.text : HOLE)).join('');
}

function hasLiteralText(s: string): boolean {
  return s.replaceAll(HOLE, '').length > 0;
}

export function checkConnectionString(value: string, ctx: Ctx): void {
  const parts = partsOrIssue(value, ctx);
  if (!parts) return;
  const shape = literalShape(parts);
  const url = /^[a-z][a-z0-9+.-]*:\/\/([^/@?#]*)@/i.exec(shape);
  const userinfoPassword = url ? url[1]!.split(':').slice(1).join(':') : '';
  // key=value's password (libpq's, or ADO.NET's Password=…;), or a URL's password query parameter.
  const kv = /(?:^|[\s?&;])password\s*=\s*('[^']*'|[^\s&;]*)/i.exec(shape);
  if (hasLiteralText(userinfoPassword) || (kv && hasLiteralText(kv[1]!.replace(/^'|'$/g, '')))) {
    ctx.addIssue({
      code: 'custom',
      message:
        'contains a literal password; put the whole connection string or the password in a reference such as "${env:SOURCE_DATABASE_URL}"',
    });
  }
}

/** A secret (storage connection string, SAS) must be a reference; `allowed` literals pass. */
export function checkSecretReference(...allowed: string[]) {
  return (value: string, ctx: Ctx): void => {
    const parts = partsOrIssue(value, ctx);
    if (!parts || allowed.includes(value)) return;
    if (!parts.some((p) => p.kind === 'ref') || hasLiteralText(literalShape(parts).replace(/^\?/, ''))) {
      ctx.addIssue({
        code: 'custom',
        message: 'is a secret: give it as a reference such as "${env:AZURE_STORAGE_CONNECTION_STRING}", not a literal value',
      });
    }
  };
}

export function checkTemplate(value: string, ctx: Ctx): void {
  try {
    parseTemplate(value);
  } catch (err) {
    if (err instanceof TemplateSyntaxError) ctx.addIssue({ code: 'custom', message: `template ${err.message}` });
    else throw err;
  }
}

/** A blob name: two placeholders with nothing between them could run two rows' values together into one name. */
export function checkBlobTemplate(value: string, ctx: Ctx): void {
  let parts;
  try {
    parts = parseTemplate(value);
  } catch {
    return; // checkTemplate says why
  }
  // Path segments of the fixed text: "." and ".." would climb out of the container in the
  // blob's URL (into another one), and an empty one names no folder.
  const segments = parts
    .map((p) => (p.kind === 'text' ? p.text : '\u0000'))
    .join('')
    .split('/');
  const odd = segments.find((s) => s === '' || s === '.' || s === '..');
  if (odd !== undefined) {
    ctx.addIssue({
      code: 'custom',
      message:
        odd === ''
          ? 'has an empty path segment (a leading or trailing "/", or "//"): every "/" must have a name on both sides'
          : `has a path segment "${odd}", which would put the blob outside its container: name the folder`,
    });
  }
  parts.forEach((p, i) => {
    const before = parts[i - 1];
    if (p.kind === 'text' && before?.kind === 'column' && p.text.startsWith('%')) {
      ctx.addIssue({
        code: 'custom',
        message: `placeholder {${before.raw}} is followed by "%", which starts the escapes of its encoded value: put another character after it`,
      });
    }
    if (p.kind !== 'column' || before?.kind !== 'column') return;
    ctx.addIssue({
      code: 'custom',
      message: `placeholders {${before.raw}} and {${p.raw}} are next to each other: put a character between them, or two rows' values could run together into one name`,
    });
  });
}
