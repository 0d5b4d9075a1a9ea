/**
 * PostgreSQL identifiers from plans. A name is either a plain identifier (folded to lower case,
 * as PostgreSQL does) or a double-quoted one (kept as written, "" for a quote). Everything that
 * reaches SQL goes through quoteIdent(): identifiers from plans are never spliced in raw.
 */

export interface QualifiedName {
  schema: string;
  name: string;
}

const PLAIN = /^[A-Za-z_][A-Za-z0-9_$]*$/;
const MAX_IDENT_BYTES = 63;

/** Split `schema.table` / `"My Schema"."My Table"` / `table` into parts; null when malformed. */
export function splitIdentifiers(text: string): string[] | null {
  const parts: string[] = [];
  let i = 0;
  while (i <= text.length) {
    if (text[i] === '"') {
      let j = i + 1;
      let out = '';
      for (;;) {
        if (j >= text.length) return null;
        if (text[j] === '"') {
          if (text[j + 1] === '"') {
            out += '"';
            j += 2;
            continue;
          }
          break;
        }
        out += text[j];
        j += 1;
      }
      if (out.length === 0) return null;
      parts.push(out);
      i = j + 1;
    } else {
      let j = i;
      while (j < text.length && text[j] !== '.') j += 1;
      const raw = text.slice(i, j);
      if (!PLAIN.test(raw)) return null;
      parts.push(raw.toLowerCase());
      i = j;
    }
    if (i === text.length) break;
    if (text[i] !== '.') return null;
    i += 1;
    if (i === text.length) return null;
  }
  if (parts.some((p) => Buffer.byteLength(p) > MAX_IDENT_BYTES)) return null;
  return parts;
}

export function isIdentifier(text: string): boolean {
  const parts = splitIdentifiers(text);
  return parts !== null && parts.length === 1;
}

export function isQualifiedName(text: string): boolean {
  const parts = splitIdentifiers(text);
  return parts !== null && (parts.length === 1 || parts.length === 2);
}

export function parseIdentifier(text: string): string {
  const parts = splitIdentifiers(text);
  if (!parts || parts.length !== 1) throw new Error(`not an identifier: ${text}`);
  return parts[0]!;
}

export function parseQualifiedName(text: string, defaultSchema = 'public'): QualifiedName {
  const parts = splitIdentifiers(text);
  if (!parts || parts.length > 2) throw new Error(`not a table name: ${text}`);
  return parts.length === 2 ? { schema: parts[0]!, name: parts[1]! } : { schema: defaultSchema, name: parts[0]! };
}

export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/**
 * SQL for a column's value as COPY and the replication stream print it (its type's output
 * function), to compare with theirs: a cast to text can differ (a boolean's is "true", not "t";
 * char(n)'s drops the trailing blanks; inet's adds "/32").
 */
export function printedText(column: string): string {
  return `format('%s', ${quoteIdent(column)})`;
}

export function quoteQualified(q: QualifiedName): string {
  return `${quoteIdent(q.schema)}.${quoteIdent(q.name)}`;
}

/** Human-readable form for messages: schema.table, quoting only where needed. */
export function displayName(q: QualifiedName): string {
  const show = (s: string) => (/^[a-z_][a-z0-9_$]*$/.test(s) ? s : quoteIdent(s));
  return `${show(q.schema)}.${show(q.name)}`;
}

export function quoteLiteral(value: string): string {
  return `'${value.replace(/'/g, "''")}'`;
}
