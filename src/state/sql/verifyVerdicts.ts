/**
 * What `cloudshift verify` last said of each table (its 'verify:result' events): a table it found
 * differing, and did not mend, differs until a later verify of that table finds it matching. The
 * batches' own verdicts come from the copy; these come after it (during live sync, say).
 */
import type { Knex } from 'knex';

/** How many of the newest verify results are read (each names the tables it checked). */
const RESULTS_READ = 50;

export interface DifferingTable {
  table: string;
  /** When the verify that found it differing recorded its result. */
  at: Date;
  differences: number;
}

export async function tablesVerifyFoundDiffering(knex: Knex, runId: string): Promise<DifferingTable[]> {
  const rows = await knex('events')
    .where({ run_id: runId, kind: 'verify:result' })
    .orderBy('id', 'desc')
    .limit(RESULTS_READ)
    .select<Array<{ at: Date; details: { tables?: Array<{ table: string; matched: boolean; differences?: number }> } }>>('at', 'details');
  const seen = new Set<string>();
  const differing: DifferingTable[] = [];
  for (const r of rows) {
    for (const t of r.details.tables ?? []) {
      if (seen.has(t.table)) continue;
      seen.add(t.table);
      if (!t.matched) differing.push({ table: t.table, at: r.at, differences: t.differences ?? 0 });
    }
  }
  return differing;
}
