/**
 * The quick verification inside the cutover pause: for each keyed table, the newest rows by key
 * (where a live application's inserts land) are hashed on both sides, after the drain: a table of
 * fewer than QUICK_ROWS rows whole. It reads at most QUICK_ROWS rows per table and side (through
 * the key's index, when that index orders as the comparison does: a text key in collation "C",
 * which the dry run checks), and is bounded by the pause budget left; the full comparison is
 * `cloudshift verify`, before or after the cutover.
 *
 * Two statements in all, whatever the number of tables: one on the source finds each table's
 * last QUICK_ROWS rows and hashes them, one on the target hashes its rows from the lowest of
 * those keys on. A round trip per table would add up, across hundreds of tables and a target a
 * WAN away, to more than the pause budget. Each row is hashed as its text rendering (the session
 * settings are pinned on both sides, so a value prints alike there), in key order.
 */
import type pg from 'pg';
import type { TableTask } from '../engine/tableTask.js';
import { quoteIdent } from '../plan/names.js';
import { rangeSql, type KeyColumn } from '../source/ranges.js';

export const QUICK_ROWS = 1000;

export interface QuickCheckResult {
  table: string;
  rows: number;
  equal: boolean;
}

/** As text, whatever types the session parses (a row count, a hex digest, a JSON key). */
interface Hashed {
  i: string;
  rows: string;
  digest: string | null;
}

/**
 * `timeoutMs`: the pause budget left; a side that has not answered by then is cancelled
 * (SQLSTATE 57014) and the check throws.
 */
export async function quickCheck(
  source: pg.Client,
  target: pg.Client,
  tasks: readonly TableTask[],
  timeoutMs: number,
): Promise<QuickCheckResult[]> {
  const keyed = tasks.filter((t): t is TableTask & { shape: { keyColumns: KeyColumn[] } } => t.shape.keyColumns !== null);
  if (keyed.length === 0) return [];
  const started = performance.now();
  const tails = await bounded<Hashed & { low: string | null }>(
    source,
    timeoutMs,
    keyed
      .map((t, i) => {
        const keys = t.shape.keyColumns;
        // Ordered by the subquery's k0, k1…: a bare key name in ORDER BY would mean an output
        // column of that name first (a key column named r or k1), and an alias of the table would
        // break a plan's where that names it.
        const newest = `SELECT * FROM (SELECT ${rowAndKeys(t)} FROM ${t.quoted}${t.where ? ` WHERE (${t.where})` : ''}) n
            ORDER BY ${keys.map((k, j) => `n.k${j}${k.collate ? ' COLLATE "C"' : ''} DESC`).join(', ')} LIMIT ${QUICK_ROWS}`;
        // Only a table that filled the tail has a lowest key to start from; a smaller one is compared whole.
        const lowest = `CASE WHEN count(*) = ${QUICK_ROWS} THEN (array_agg(json_build_array(${keys.map((_, j) => `s.k${j}::text`).join(', ')}) ORDER BY ${inKeyOrder(keys)}))[1]::text END`;
        return `SELECT ${i}::text AS i, ${hashed(keys)}, ${lowest} AS low FROM (${newest}) s`;
      })
      .join(' UNION ALL '),
  );
  const onSource = new Map(tails.map((r) => [r.i, r]));
  const lowest = (i: number) => {
    const low = onSource.get(String(i))?.low ?? null;
    return low === null ? null : (JSON.parse(low) as string[]);
  };
  const targetRows = await bounded<Hashed>(
    target,
    timeoutMs - (performance.now() - started),
    keyed
      .map((t, i) => {
        const from = lowest(i);
        const range = from === null ? 'true' : rangeSql({ kind: 'key', low: from, high: null }, t.shape.keyColumns);
        return `SELECT ${i}::text AS i, ${hashed(t.shape.keyColumns)} FROM (SELECT ${rowAndKeys(t)} FROM ${t.quoted} WHERE ${range}) s`;
      })
      .join(' UNION ALL '),
  );
  const onTarget = new Map(targetRows.map((r) => [r.i, r]));
  return keyed.map((t, i) => {
    const here = onSource.get(String(i))!;
    const there = onTarget.get(String(i));
    return {
      table: t.display,
      rows: Number(here.rows),
      equal: there !== undefined && there.rows === here.rows && there.digest === here.digest,
    };
  });
}

/**
 * `sql` on `client` under a statement timeout of `ms` (at least 1), in one round trip: the three
 * statements of one simple query run in one implicit transaction, so a timeout or any failure
 * also undoes the SET.
 */
async function bounded<R extends pg.QueryResultRow>(client: pg.Client, ms: number, sql: string): Promise<R[]> {
  const results = (await client.query(
    `SET statement_timeout = ${Math.max(1, Math.floor(ms))}; ${sql}; RESET statement_timeout`,
  )) as unknown as Array<pg.QueryResult<R>>;
  return results[1]!.rows;
}

/** A row's text rendering (the copied columns) and its key columns, as k0, k1…. */
function rowAndKeys(t: TableTask & { shape: { keyColumns: KeyColumn[] } }): string {
  const keys = t.shape.keyColumns.map((k, j) => `${quoteIdent(k.name)} AS k${j}`);
  return [`ROW(${t.shape.columns.map(quoteIdent).join(', ')})::text AS r`, ...keys].join(', ');
}

function inKeyOrder(keys: KeyColumn[]): string {
  return keys.map((k, j) => `s.k${j}${k.collate ? ' COLLATE "C"' : ''}`).join(', ');
}

/** The row count, and the SHA-256 of the rows' own SHA-256s in key order (NULL for no rows). */
function hashed(keys: KeyColumn[]): string {
  return `count(*)::text AS rows, encode(sha256(string_agg(sha256(textsend(s.r)), ''::bytea ORDER BY ${inKeyOrder(keys)})), 'hex') AS digest`;
}
