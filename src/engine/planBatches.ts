/** Table tasks from the catalogs, and the run's batches, planned once, largest tables first. */
import type pg from 'pg';
import { PreconditionError } from '../errors.js';
import type { DocumentPlan, Plan } from '../plan/defaults.js';
import { displayName } from '../plan/names.js';
import {
  blobNameKey,
  contentKind,
  inheritanceProblem,
  introspectTable,
  OID_REFERENCE_TYPES,
  placeholderProblems,
  type TableInfo,
} from '../source/introspect.js';
import { copyShape, splitTable } from '../source/splitTable.js';
import { copiedColumns } from '../target/postgres/existingShape.js';
import type { StateStore } from '../state/store.js';
import type { NewBatch } from '../state/types.js';
import { rangeBounds, tableTask, type TableTask } from './tableTask.js';

export async function tableTasks(source: pg.Client, plan: Plan): Promise<TableTask[]> {
  const tasks: TableTask[] = [];
  const documentTables = new Set(plan.documents.map((d) => displayName(d.table)));
  for (const d of plan.documents) tasks.push(await documentsTask(source, plan, d));
  for (const t of plan.tables.filter((x) => !documentTables.has(displayName(x.name)))) {
    const info = await introspectTable(source, t.name);
    const name = displayName(t.name);
    if (!info || info.kind === 'other') {
      throw new PreconditionError(`table ${name} does not exist on the source (plan tables[${t.index}]); nothing was copied`);
    }
    refuseInheritance(info, name);
    const bad = info.columns.find((c) => OID_REFERENCE_TYPES.has(c.typeName.replace(/^_/, '')));
    if (bad) {
      throw new PreconditionError(
        `cannot copy column ${bad.name} of ${name}: type ${bad.type} holds OIDs of catalog objects that differ on the target; nothing was copied`,
        {
          hint: `cast the column to text on the source (ALTER TABLE ${name} ALTER COLUMN ${bad.name} TYPE text) or leave the table out`,
        },
      );
    }
    tasks.push(tableTask(t.name, copyShape(info), copiedColumns(info), t.where, t.batchRows));
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
      batches.push({ kind: task.documents ? 'documents' : 'table', relation: task.display, seq, keyLow: low, keyHigh: high });
    });
  }
  await store.addBatches(runId, batches);
}

/** A documents table: the content column goes to Blob Storage; the row keeps the blob name. */
async function documentsTask(source: pg.Client, plan: Plan, d: DocumentPlan): Promise<TableTask> {
  const name = displayName(d.table);
  const where = `documents[${d.index}]`;
  if (plan.documents.filter((x) => displayName(x.table) === name).length > 1) {
    throw new PreconditionError(`${name} has more than one documents entry; this version moves one content column per table (${where})`);
  }
  const info = await introspectTable(source, d.table);
  if (!info || info.kind === 'other')
    throw new PreconditionError(`table ${name} does not exist on the source (${where}.table); nothing was copied`);
  refuseInheritance(info, name);
  const column = info.columns.find((c) => c.name === d.content);
  if (!column) throw new PreconditionError(`column "${d.content}" does not exist in ${name} (${where}.content); nothing was copied`);
  const kind = contentKind(column);
  if (kind === null) {
    throw new PreconditionError(
      `column "${d.content}" of ${name} is ${column.type}: a documents column must be bytea or oid (${where}.content); nothing was copied`,
    );
  }
  const problems = placeholderProblems(d, info);
  if (problems.length > 0) throw new PreconditionError(`${name}: ${problems.join('; ')}; nothing was copied`);
  const names = blobNameKey(d, info);
  const shape = copyShape(info, [d.content]);
  if (!shape.keyColumns)
    throw new PreconditionError(`${name} has no primary key or unique key: documents need one to name and resume them (${where})`);
  const table = plan.tables.find((t) => displayName(t.name) === name);
  return {
    ...tableTask(
      d.table,
      { ...shape, format: 'text' },
      copiedColumns(info, [d.content], [d.keepColumn]),
      table?.where,
      table?.batchRows ?? plan.copy.batchRows,
    ),
    documents: {
      plan: d,
      contentKind: kind,
      namesCollide: 'problem' in names ? names.problem : null,
    },
  };
}

function refuseInheritance(info: TableInfo, name: string): void {
  const problem = inheritanceProblem(info, name);
  if (problem) throw new PreconditionError(`${problem.message}; nothing was copied`, { hint: problem.hint });
}
