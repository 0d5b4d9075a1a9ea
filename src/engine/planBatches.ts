/** Table tasks from the catalogs, and the run's batches, planned once, largest tables first. */
import type pg from 'pg';
import { PreconditionError } from '../errors.js';
import type { Plan } from '../plan/defaults.js';
import { displayName } from '../plan/names.js';
import { introspectTable, OID_REFERENCE_TYPES } from '../source/introspect.js';
import { copyShape, splitTable } from '../source/splitTable.js';
import type { StateStore } from '../state/store.js';
import type { NewBatch } from '../state/types.js';
import { rangeBounds, tableTask, type TableTask } from './tableTask.js';

export async function tableTasks(source: pg.Client, plan: Plan): Promise<TableTask[]> {
  const tasks: TableTask[] = [];
  for (const t of plan.tables) {
    const info = await introspectTable(source, t.name);
    const name = displayName(t.name);
    if (!info || info.kind === 'other') {
      throw new PreconditionError(`table ${name} does not exist on the source (plan tables[${t.index}]); nothing was copied`);
    }
    const bad = info.columns.find((c) => OID_REFERENCE_TYPES.has(c.typeName.replace(/^_/, '')));
    if (bad) {
      throw new PreconditionError(
        `cannot copy column ${bad.name} of ${name}: type ${bad.type} holds OIDs of catalog objects that differ on the target; nothing was copied`,
        {
          hint: `cast the column to text on the source (ALTER TABLE ${name} ALTER COLUMN ${bad.name} TYPE text) or leave the table out`,
        },
      );
    }
    tasks.push(tableTask(t.name, copyShape(info), t.where, t.batchRows));
  }
  return tasks.sort((a, b) => b.shape.bytes - a.shape.bytes);
}

export async function planBatches(store: StateStore, runId: string, source: pg.Client, tasks: TableTask[]): Promise<void> {
  if (await store.hasBatches(runId)) return;
  const batches: NewBatch[] = [];
  for (const task of tasks) {
    const ranges = await splitTable(source, task.name, task.shape, task.batchRows);
    ranges.forEach((r, seq) => {
      const { low, high } = rangeBounds(r);
      batches.push({ kind: 'table', relation: task.display, seq, keyLow: low, keyHigh: high });
    });
  }
  await store.addBatches(runId, batches);
}
