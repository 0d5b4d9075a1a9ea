/**
 * Pinpoints the rows that differ in a key range: the range is bisected on its keys (the split
 * key is the range's middle row on the side with more rows), each half compared by checksum on
 * both sides, until a half holds few enough rows to compare row by row. Only keys leave this
 * module: row contents (patient data) are compared, never reported.
 */
import type pg from 'pg';
import { quoteIdent } from '../plan/names.js';
import { rangeSql, type KeyColumn } from '../source/ranges.js';
import { digestRange } from '../engine/copyBatch.js';
import type { TableTask } from '../engine/tableTask.js';
import { digestEquals } from './rowDigest.js';

/** Ranges with at most this many rows on either side are compared row by row. */
export const LEAF_ROWS = 64;

export interface KeyRange {
  low: string[] | null;
  high: string[] | null;
}

export interface Difference {
  kind: 'missing' | 'extra' | 'different';
  key: string[];
}

export interface Sides {
  source: pg.Client;
  target: pg.Client;
}

const asBatch = (r: KeyRange) => ({ key_low: r.low, key_high: r.high });

export async function rangeDigests(sides: Sides, task: TableTask, range: KeyRange) {
  const [source, target] = await Promise.all([
    digestRange(sides.source, task, asBatch(range), task.where),
    digestRange(sides.target, task, asBatch(range), undefined),
  ]);
  return { source, target, equal: digestEquals(source, target) };
}

export async function findDifferences(
  sides: Sides,
  task: TableTask,
  range: KeyRange,
  rows: { source: number; target: number },
  limit: number,
): Promise<Difference[]> {
  if (Math.max(rows.source, rows.target) <= LEAF_ROWS) return compareRows(sides, task, range);
  const bigger =
    rows.source >= rows.target
      ? { client: sides.source, where: task.where, n: rows.source }
      : { client: sides.target, where: undefined, n: rows.target };
  const middle = await keyAt(bigger.client, task, range, Math.floor(bigger.n / 2), bigger.where);
  const halves: KeyRange[] = [
    { low: range.low, high: middle },
    { low: middle, high: range.high },
  ];
  const out: Difference[] = [];
  for (const half of halves) {
    if (out.length >= limit) break;
    const d = await rangeDigests(sides, task, half);
    if (d.equal) continue;
    out.push(...(await findDifferences(sides, task, half, { source: d.source.rows, target: d.target.rows }, limit - out.length)));
  }
  return out;
}

function keyColumns(task: TableTask): KeyColumn[] {
  const k = task.shape.keyColumns;
  if (!k) throw new Error(`${task.display} has no key: its differences cannot be pinpointed`);
  return k;
}

function keySelect(task: TableTask): string {
  return keyColumns(task)
    .map((k, i) => `${quoteIdent(k.name)}::text AS k${i}`)
    .join(', ');
}

function orderBy(task: TableTask): string {
  return keyColumns(task)
    .map((k) => `${quoteIdent(k.name)}${k.collate ? ' COLLATE "C"' : ''}`)
    .join(', ');
}

function where(task: TableTask, range: KeyRange, filter: string | undefined): string {
  return [rangeSql({ kind: 'key', ...range }, keyColumns(task)), ...(filter ? [`(${filter})`] : [])].join(' AND ');
}

async function keyAt(client: pg.Client, task: TableTask, range: KeyRange, offset: number, filter: string | undefined): Promise<string[]> {
  const { rows } = await client.query<Record<string, string>>(
    `SELECT ${keySelect(task)} FROM ${task.quoted} WHERE ${where(task, range, filter)} ORDER BY ${orderBy(task)} OFFSET ${offset} LIMIT 1`,
  );
  const r = rows[0]!;
  return keyColumns(task).map((_, i) => r[`k${i}`]!);
}

async function rowsOf(
  client: pg.Client,
  task: TableTask,
  range: KeyRange,
  filter: string | undefined,
): Promise<Map<string, { key: string[]; row: string }>> {
  const cols = task.shape.columns.map(quoteIdent).join(', ');
  const { rows } = await client.query<Record<string, string>>(
    `SELECT ${keySelect(task)}, ROW(${cols})::text AS r FROM ${task.quoted} WHERE ${where(task, range, filter)} ORDER BY ${orderBy(task)}`,
  );
  const n = keyColumns(task).length;
  return new Map(
    rows.map((r) => {
      const key = Array.from({ length: n }, (_, i) => r[`k${i}`]!);
      return [JSON.stringify(key), { key, row: r.r! }];
    }),
  );
}

async function compareRows(sides: Sides, task: TableTask, range: KeyRange): Promise<Difference[]> {
  const [source, target] = await Promise.all([rowsOf(sides.source, task, range, task.where), rowsOf(sides.target, task, range, undefined)]);
  const out: Difference[] = [];
  for (const [k, s] of source) {
    const t = target.get(k);
    if (!t) out.push({ kind: 'missing', key: s.key });
    else if (t.row !== s.row) out.push({ kind: 'different', key: s.key });
  }
  for (const [k, t] of target) if (!source.has(k)) out.push({ kind: 'extra', key: t.key });
  return out;
}
