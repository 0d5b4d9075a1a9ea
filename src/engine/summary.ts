/** Per-table totals of a run, from the state store. */
import type { StateStore } from '../state/store.js';

export interface TableSummary {
  table: string;
  batches: number;
  verified: number;
  mismatched: number;
  rows: number;
  bytes: number;
}

export interface RunSummary {
  tables: TableSummary[];
  rows: number;
  bytes: number;
  mismatches: number;
  seconds: number;
}

export async function summarize(store: StateStore, runId: string, startedAtMs: number): Promise<RunSummary> {
  const byTable = new Map<string, TableSummary>();
  for (const b of await store.listBatches(runId)) {
    const t = byTable.get(b.relation) ?? { table: b.relation, batches: 0, verified: 0, mismatched: 0, rows: 0, bytes: 0 };
    t.batches += 1;
    if (b.status === 'verified') t.verified += 1;
    if (b.status === 'mismatch') t.mismatched += 1;
    t.rows += Number(b.rows ?? 0);
    t.bytes += Number(b.bytes ?? 0);
    byTable.set(b.relation, t);
  }
  const tables = [...byTable.values()];
  return {
    tables,
    rows: tables.reduce((n, t) => n + t.rows, 0),
    bytes: tables.reduce((n, t) => n + t.bytes, 0),
    mismatches: tables.reduce((n, t) => n + t.mismatched, 0),
    seconds: (Date.now() - startedAtMs) / 1000,
  };
}
