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
