/**
 * Key ranges of a batch and the SQL that selects them. A range is half-open, [low, high), over
 * the batch key (a primary key or a usable unique key, possibly composite) compared as a row;
 * `null` ends are open. Tables without a key are split by ctid page ranges. Boundary values are
 * kept as the server's text and cast back with the column types, so they never pass through
 * JavaScript types. Text-like keys compare with COLLATE "C" so both servers agree on the order.
 */
import { quoteIdent } from '../plan/names.js';

export interface KeyColumn {
  name: string;
  /** format_type() of the column, used to cast boundary values. */
  type: string;
  /** Compare with COLLATE "C" (collatable types). */
  collate: boolean;
}

export type BatchRange =
  { kind: 'key'; low: string[] | null; high: string[] | null } | { kind: 'ctid'; lowPage: number | null; highPage: number | null };

export interface Predicate {
  sql: string;
  params: string[];
}

function keyTuple(columns: KeyColumn[]): string {
  const cols = columns.map((c) => `${quoteIdent(c.name)}${c.collate ? ' COLLATE "C"' : ''}`);
  return cols.length === 1 ? cols[0]! : `(${cols.join(', ')})`;
}

/** A key value as SQL: a bind parameter, or a quoted literal where none can be bound (COPY; its params are then unused). */
type ValueSql = (value: string, position: number) => string;

const parameter: ValueSql = (_v, position) => `$${position}`;
const literal: ValueSql = (v) => `'${v.replace(/'/g, "''")}'`;

function valueTuple(columns: KeyColumn[], values: string[], offset: number, sql: ValueSql): string {
  const vals = columns.map((c, i) => `${sql(values[i]!, offset + i + 1)}::${c.type}${c.collate ? ' COLLATE "C"' : ''}`);
  return vals.length === 1 ? vals[0]! : `(${vals.join(', ')})`;
}

/** WHERE clause (without WHERE) selecting a range, with bind parameters; `true` for an unbounded one. */
export function rangePredicate(range: BatchRange, columns: KeyColumn[], paramOffset = 0): Predicate {
  return predicate(range, columns, paramOffset, parameter);
}

/**
 * The same clause with the values as quoted literals, for COPY (which takes no parameters). The
 * literals are written where they belong: nothing else in a statement (a plan's `where`, a
 * column named `a$1`) is ever rewritten.
 */
export function rangeSql(range: BatchRange, columns: KeyColumn[]): string {
  return predicate(range, columns, 0, literal).sql;
}

function predicate(range: BatchRange, columns: KeyColumn[], paramOffset: number, sql: ValueSql): Predicate {
  if (range.kind === 'ctid') {
    const parts: string[] = [];
    if (range.lowPage !== null) parts.push(`ctid >= '(${range.lowPage},0)'::tid`);
    if (range.highPage !== null) parts.push(`ctid < '(${range.highPage},0)'::tid`);
    return { sql: parts.length ? parts.join(' AND ') : 'true', params: [] };
  }
  const parts: string[] = [];
  const params: string[] = [];
  if (range.low) {
    parts.push(`${keyTuple(columns)} >= ${valueTuple(columns, range.low, paramOffset + params.length, sql)}`);
    params.push(...range.low);
  }
  if (range.high) {
    parts.push(`${keyTuple(columns)} < ${valueTuple(columns, range.high, paramOffset + params.length, sql)}`);
    params.push(...range.high);
  }
  return { sql: parts.length ? parts.join(' AND ') : 'true', params };
}

/** The SELECT of a batch's rows, with literals inlined (COPY takes no bind parameters). */
export function batchSelect(
  table: string,
  columns: string[],
  range: BatchRange,
  keyColumns: KeyColumn[],
  where: string | undefined,
  /** SQL expressions selected after the columns (the documents copy's content marker). */
  extra: string[] = [],
): string {
  const conditions = [rangeSql(range, keyColumns), ...(where ? [`(${where})`] : [])].filter((c) => c !== 'true');
  const cols = [...columns.map(quoteIdent), ...extra].join(', ');
  // Keyed batches are read in key order on both sides, so their COPY streams hash equal.
  const order = range.kind === 'key' && keyColumns.length > 0 ? ` ORDER BY ${keyList(keyColumns)}` : '';
  return `SELECT ${cols} FROM ${table}${conditions.length ? ` WHERE ${conditions.join(' AND ')}` : ''}${order}`;
}

function keyList(columns: KeyColumn[]): string {
  return columns.map((c) => `${quoteIdent(c.name)}${c.collate ? ' COLLATE "C"' : ''}`).join(', ');
}

/** `(k1, k2) IN ((v1::t1, v2::t2), ...)` with inlined literals, for a handful of rows. */
export function keysPredicate(columns: KeyColumn[], keys: string[][]): string {
  const lit = (v: string, c: KeyColumn) => `${literal(v, 0)}::${c.type}${c.collate ? ' COLLATE "C"' : ''}`;
  const tuple = (vals: string[]) =>
    columns.length === 1 ? lit(vals[0]!, columns[0]!) : `(${vals.map((v, i) => lit(v, columns[i]!)).join(', ')})`;
  if (keys.length === 0) return 'false';
  return `${keyTuple(columns)} IN (${keys.map(tuple).join(', ')})`;
}
