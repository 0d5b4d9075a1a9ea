/**
 * Independent comparison of table contents on both sides: each row's text form, in key order,
 * aggregated by the servers. Deliberately not cloudshift's own checksum code.
 */
import { sql } from './db.js';
import type { Scenario } from './scenario.js';

export async function tableText(side: 'source' | 'target', database: string, table: string, orderBy: string): Promise<string> {
  const rows = await sql<{ text: string | null; n: string }>(
    side,
    database,
    `SELECT string_agg(t::text, E'\\n' ORDER BY ${orderBy}) AS text, count(*)::text AS n FROM ${table} t`,
  );
  return `${rows[0]!.n}\n${rows[0]!.text ?? ''}`;
}

export async function expectSameRows(s: Scenario, table: string, orderBy: string): Promise<{ source: string; target: string }> {
  const source = await tableText('source', s.dbs.source, table, orderBy);
  const target = await tableText('target', s.dbs.target, table, orderBy);
  return { source, target };
}
