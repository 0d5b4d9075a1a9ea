/**
 * The quick verification inside the cutover pause: for each keyed table, the newest rows by key
 * (where a live application's inserts land) are checksummed on both sides, after the drain. It is
 * bounded (an index scan of QUICK_ROWS rows per table), so it fits in the pause; the full
 * comparison is `cloudshift verify`, before or after the cutover.
 */
import type pg from 'pg';
import type { TableTask } from '../engine/tableTask.js';
import { rangeDigests, tailRange } from '../verify/differences.js';

export const QUICK_ROWS = 1000;

export interface QuickCheckResult {
  table: string;
  rows: number;
  equal: boolean;
}

export async function quickCheck(source: pg.Client, target: pg.Client, tasks: readonly TableTask[]): Promise<QuickCheckResult[]> {
  const out: QuickCheckResult[] = [];
  for (const task of tasks) {
    if (!task.shape.keyColumns) continue;
    const range = await tailRange(source, task, QUICK_ROWS, task.where);
    const d = await rangeDigests({ source, target }, task, range);
    out.push({ table: task.display, rows: d.source.rows, equal: d.equal });
  }
  return out;
}
