/**
 * Splits a table into batches: key ranges over its primary key (or a usable unique key), sized
 * from catalog statistics and a sample of keys (never OFFSET, never count(*) on big tables), or
 * ctid page ranges for a table without a key. The first and last ranges are open, so every row
 * is in exactly one batch whatever changed since the sample.
 */
import type pg from 'pg';
import { quoteIdent, quoteQualified, type QualifiedName } from '../plan/names.js';
import { batchKey, writtenColumns, type TableInfo } from './introspect.js';
import type { BatchRange, KeyColumn } from './ranges.js';

/** Tables with fewer estimated rows than this are split exactly from their keys. */
const EXACT_SPLIT_MAX_ROWS = 2_000_000;
const SAMPLES_PER_BATCH = 40;

export interface CopyShape {
  /** Target columns the copy writes (generated and omitted columns excluded). */
  columns: string[];
  /** Key columns of the batch ranges; null: ctid page ranges. */
  keyColumns: KeyColumn[] | null;
  /** How batches are keyed, for messages: "primary key (id)", "unique key x (a, b)", "ctid pages". */
  keyDescription: string;
  /** binary COPY when every column is a built-in type, text otherwise. */
  format: 'binary' | 'text';
  estimatedRows: number;
  bytes: number;
}

/** Catalog references whose text (a name) resolves on the target, unlike their OID. */
const NAMED_BY_TEXT = new Set(['regclass', 'regtype', 'regrole', 'regnamespace']);

export function copyShape(info: TableInfo, omit: readonly string[] = []): CopyShape {
  const byName = new Map(info.columns.map((c) => [c.name, c]));
  const columns = writtenColumns(info, omit);
  const unique = batchKey(info);
  const keyColumns = unique
    ? unique.columns.map((name) => {
        const c = byName.get(name)!;
        return { name, type: c.type, collate: c.collatable };
      })
    : null;
  // Binary COPY carries a value as the server holds it: equal values can differ in bytes (an array
  // keeps a null bitmap after its last NULL is gone, and the target's copy has none), and a reg*
  // value travels as the OID of a catalog object, which names another object (or none) on the
  // target. Their text is exact on both sides: such tables are copied as text.
  const builtin = columns.every(
    (c) =>
      c.typeSchema === 'pg_catalog' &&
      c.typtype !== 'c' &&
      c.typtype !== 'd' &&
      c.typtype !== 'e' &&
      !c.typeName.startsWith('_') &&
      !NAMED_BY_TEXT.has(c.typeName),
  );
  return {
    columns: columns.map((c) => c.name),
    keyColumns,
    keyDescription: unique
      ? `${unique.primary ? 'primary key' : `unique key ${unique.name}`} (${unique.columns.join(', ')})`
      : 'ctid pages',
    format: builtin ? 'binary' : 'text',
    estimatedRows: info.estimatedRows ?? Math.ceil(info.bytes / 100),
    bytes: info.bytes,
  };
}

export async function splitTable(client: pg.Client, table: QualifiedName, shape: CopyShape, batchRows: number): Promise<BatchRange[]> {
  const batches = Math.ceil(shape.estimatedRows / batchRows);
  if (!shape.keyColumns) return splitByPages(client, table, batches);
  if (batches <= 1) return [{ kind: 'key', low: null, high: null }];
  const keys = shape.keyColumns;
  const cols = keys.map((k) => `${quoteIdent(k.name)}${k.collate ? ' COLLATE "C"' : ''}`);
  const asText = keys.map((k, i) => `${quoteIdent(k.name)}::text AS k${i}`).join(', ');
  let boundaries: string[][];
  if (shape.estimatedRows <= EXACT_SPLIT_MAX_ROWS) {
    const { rows } = await client.query<Record<string, string>>(
      `SELECT ${keys.map((_, i) => `k${i}`).join(', ')} FROM (
         SELECT ${asText}, row_number() OVER (ORDER BY ${cols.join(', ')}) AS rn FROM ${quoteQualified(table)}
       ) s WHERE rn > 1 AND rn % $1 = 1 ORDER BY rn`,
      [batchRows],
    );
    boundaries = rows.map((r) => keys.map((_, i) => r[`k${i}`]!));
  } else {
    const wanted = batches * SAMPLES_PER_BATCH;
    const percent = Math.min(100, (wanted / shape.estimatedRows) * 100 * 1.5);
    const { rows } = await client.query<Record<string, string>>(
      `SELECT ${asText} FROM ${quoteQualified(table)} TABLESAMPLE SYSTEM ($1) ORDER BY ${cols.join(', ')}`,
      [percent],
    );
    const sample = rows.map((r) => keys.map((_, i) => r[`k${i}`]!));
    boundaries = [];
    for (let b = 1; b < batches; b += 1) {
      const at = sample[Math.floor((b * sample.length) / batches)];
      if (at && (boundaries.length === 0 || boundaries[boundaries.length - 1]!.join('\u0000') !== at.join('\u0000'))) boundaries.push(at);
    }
  }
  const ranges: BatchRange[] = [];
  let low: string[] | null = null;
  for (const b of boundaries) {
    ranges.push({ kind: 'key', low, high: b });
    low = b;
  }
  ranges.push({ kind: 'key', low, high: null });
  return ranges;
}

async function splitByPages(client: pg.Client, table: QualifiedName, batches: number): Promise<BatchRange[]> {
  const { rows } = await client.query<{ pages: string }>(
    `SELECT (pg_relation_size($1::regclass) / current_setting('block_size')::int)::text AS pages`,
    [quoteQualified(table)],
  );
  const pages = Number(rows[0]!.pages);
  if (batches <= 1 || pages <= 1) return [{ kind: 'ctid', lowPage: null, highPage: null }];
  const per = Math.ceil(pages / batches);
  const ranges: BatchRange[] = [];
  for (let p = 0; p < pages; p += per) {
    ranges.push({ kind: 'ctid', lowPage: p === 0 ? null : p, highPage: p + per >= pages ? null : p + per });
  }
  return ranges;
}
