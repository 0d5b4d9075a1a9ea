/**
 * Independent comparison of table contents on both sides: each row's text form, in key order,
 * aggregated by the servers. Deliberately not cloudshift's own checksum code.
 */
import { expect } from 'vitest';
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

/**
 * Asserts that each table (name → ORDER BY) holds the same rows on both sides, naming the one
 * that differs; returns each table's rows as the source has them, for further checks.
 */
export async function expectTablesMatch(s: Scenario, orders: Record<string, string>): Promise<Record<string, string>> {
  const texts: Record<string, string> = {};
  for (const [table, orderBy] of Object.entries(orders)) {
    const { source, target } = await expectSameRows(s, table, orderBy);
    expect(target, table).toBe(source);
    texts[table] = source;
  }
  return texts;
}
