/**
 * Name templates for documents: `patients/{patient_id}/{id}-{filename}`. A placeholder names a
 * column of the documents table; `{{` and `}}` stand for literal braces. Parsing is pure and
 * shared by validation (well-formedness), preflight (placeholders are columns) and upload.
 */
import { splitIdentifiers } from './names.js';

export type TemplatePart = { kind: 'text'; text: string } | { kind: 'column'; column: string; raw: string };

export class TemplateSyntaxError extends Error {}

const parsed = new Map<string, readonly TemplatePart[]>();

/** The template's parts (parsed once per template: every document's name and headers use them). */
export function parseTemplate(template: string): readonly TemplatePart[] {
  let parts = parsed.get(template);
  if (!parts) {
    parts = parseParts(template);
    parsed.set(template, parts);
  }
  return parts;
}

function parseParts(template: string): TemplatePart[] {
  const parts: TemplatePart[] = [];
  let text = '';
  let i = 0;
  while (i < template.length) {
    const ch = template[i]!;
    if (ch === '{' && template[i + 1] === '{') {
      text += '{';
      i += 2;
    } else if (ch === '}' && template[i + 1] === '}') {
      text += '}';
      i += 2;
    } else if (ch === '{') {
      const end = template.indexOf('}', i + 1);
      if (end < 0) throw new TemplateSyntaxError(`unclosed "{" at character ${i + 1}`);
      const raw = template.slice(i + 1, end);
      const ident = splitIdentifiers(raw.trim());
      if (raw.trim() === '' || !ident || ident.length !== 1) {
        throw new TemplateSyntaxError(`placeholder "{${raw}}" is not a column name`);
      }
      if (text) parts.push({ kind: 'text', text });
      text = '';
      parts.push({ kind: 'column', column: ident[0]!, raw });
      i = end + 1;
    } else if (ch === '}') {
      throw new TemplateSyntaxError(`unmatched "}" at character ${i + 1} (write "}}" for a literal brace)`);
    } else {
      text += ch;
      i += 1;
    }
  }
  if (text) parts.push({ kind: 'text', text });
  return parts;
}

export function templateColumns(template: string): string[] {
  return parseTemplate(template).flatMap((p) => (p.kind === 'column' ? [p.column] : []));
}

/**
 * Could two blob name templates give one name? A value never holds "/" (names.ts encodes it), so
 * the names have as many folders as their templates, and a folder whose fixed text starts or ends
 * differently in the two is never the same. Anything else might meet: the answer is "no" only
 * when the fixed text proves it.
 */
export function namesMayMeet(a: string, b: string): boolean {
  const sa = segments(a);
  const sb = segments(b);
  return sa.length === sb.length && sa.every((s, i) => segmentsMayMeet(s, sb[i]!));
}

type Segment = { text: string; placeholders: boolean; head: string; tail: string };

function segments(template: string): Segment[] {
  const out: Array<Array<TemplatePart>> = [[]];
  for (const p of parseTemplate(template)) {
    if (p.kind === 'column') {
      out[out.length - 1]!.push(p);
      continue;
    }
    p.text.split('/').forEach((text, i) => {
      if (i > 0) out.push([]);
      if (text) out[out.length - 1]!.push({ kind: 'text', text });
    });
  }
  return out.map((parts) => {
    const text = (p: TemplatePart | undefined) => (p?.kind === 'text' ? p.text : '');
    return {
      text: parts.map(text).join(''),
      placeholders: parts.some((p) => p.kind === 'column'),
      head: text(parts[0]),
      tail: text(parts[parts.length - 1]),
    };
  });
}

function segmentsMayMeet(a: Segment, b: Segment): boolean {
  if (!a.placeholders && !b.placeholders) return a.text === b.text;
  // A folder of fixed text is its own head and tail.
  const head = (s: Segment) => (s.placeholders ? s.head : s.text);
  const tail = (s: Segment) => (s.placeholders ? s.tail : s.text);
  const compatible = (x: string, y: string, f: (long: string, short: string) => boolean) => f(x, y) || f(y, x);
  return compatible(head(a), head(b), (l, s) => l.startsWith(s)) && compatible(tail(a), tail(b), (l, s) => l.endsWith(s));
}
