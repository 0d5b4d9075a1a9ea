/**
 * Blob names, content types, metadata and tags from a document's row. Each placeholder value is
 * encoded so it can never add a path segment or a character Azure refuses: everything outside
 * [A-Za-z0-9._~-] is percent-encoded (a "/" inside a value becomes %2F), and so are the dots a
 * value ends with (Azure drops a segment's last dots, and "." or ".." segments fold away), so no
 * value adds or removes a path segment or a character. So that two rows never run
 * together into one name, a value is also kept from holding the character the template puts
 * after its placeholder: in "{code}-{filename}" a code's "-" is %2D, so ("a-b", "c.pdf") and
 * ("a", "b-c.pdf") stay apart (validation refuses two placeholders with nothing between them).
 * A NULL placeholder is an error naming the table, the row's key and the column.
 */
import { CloudshiftError, ExitCode } from '../../errors.js';
import { parseTemplate } from '../../plan/templates.js';

export class DocumentError extends CloudshiftError {
  constructor(message: string, hint?: string) {
    super('CS_DOCUMENT', ExitCode.failed, message, hint === undefined ? {} : { hint });
  }
}

/** `value` URL-safe as (part of) one path segment; `stop`, the character after it in the name, encoded too. */
export function encodeSegment(value: string, stop = ''): string {
  const bytes = Buffer.from(value, 'utf8');
  // The dots a value ends with are encoded: Azure drops the dots a name's segment ends with
  // ("scan." is stored as "scan"; "A." and "A" would be one blob), and a value of only dots
  // could make a "." or ".." segment, which a URL folds away.
  let dots = bytes.length;
  while (dots > 0 && bytes[dots - 1] === 0x2e) dots -= 1;
  return Array.from(bytes)
    .map((b, i) => {
      const c = String.fromCharCode(b);
      return /[A-Za-z0-9._~-]/.test(c) && c !== stop && i < dots ? c : `%${b.toString(16).toUpperCase().padStart(2, '0')}`;
    })
    .join('');
}

export interface RowValues {
  /** Column → text value (null for SQL NULL). */
  get(column: string): string | null;
  /** "table id=42" for messages. */
  describe: string;
}

export function renderTemplate(
  template: string,
  row: RowValues,
  field: string,
  /** `next`: the template's character right after the placeholder ('' at the end). */
  encode: (v: string, next: string) => string,
): string {
  const parts = parseTemplate(template);
  return parts
    .map((p, i) => {
      if (p.kind === 'text') return p.text;
      const v = row.get(p.column);
      if (v === null) {
        throw new DocumentError(
          `${row.describe}: column "${p.column}" is NULL, but the ${field} template needs it`,
          `give the row a value, or change the ${field} template`,
        );
      }
      const after = parts[i + 1];
      return encode(v, after?.kind === 'text' ? after.text[0]! : '');
    })
    .join('');
}

export function blobName(template: string, row: RowValues): string {
  const name = renderTemplate(template, row, 'blob name', encodeSegment);
  if (name.length === 0 || name.length > 1024)
    throw new DocumentError(`${row.describe}: blob name "${name.slice(0, 80)}" must be 1 to 1024 characters`);
  return name;
}

/** The fixed text a name template starts with: every blob of the entry is under it. */
export function blobPrefix(template: string): string {
  const first = parseTemplate(template)[0];
  return first?.kind === 'text' ? first.text : '';
}

/** Header-safe text for metadata and tags (ASCII; anything else percent-encoded). */
export function headerValue(v: string): string {
  // By code point: a character beyond U+FFFF is two UTF-16 units, and either alone is no URI text.
  return v.replace(/[^\x20-\x7e]/gu, (ch) => encodeURIComponent(ch));
}

/**
 * Whether a blob name is one the template could give: its fixed text in place, each value in the
 * encoded alphabet (`encodeSegment`) without the character that follows it. Blobs that are not
 * are no document of this entry: an extra blob is only ever one that is.
 */
export function nameMatcher(template: string): (name: string) => boolean {
  const parts = parseTemplate(template);
  const escape = (t: string) => t.replace(/[.*+?^${}()|[\]\\/-]/g, '\\$&');
  const source = parts
    .map((p, i) => {
      if (p.kind === 'text') return escape(p.text);
      const after = parts[i + 1];
      // An escape is one unit: its hex digits may be the stop character, never the end of the value.
      const stop = after?.kind === 'text' ? `(?!${escape(after.text[0]!)})` : '';
      return `(?:%[0-9A-F]{2}|${stop}[A-Za-z0-9._~-])*`;
    })
    .join('');
  const pattern = new RegExp(`^${source}$`);
  return (name) => pattern.test(name);
}
