/**
 * Large-object documents are not in the WAL stream: a row keeps its oid while the object's bytes
 * change in place (lo_put, lowrite), and logical decoding never sees it. They are reconciled by
 * their own change detection: the transaction ids that wrote pg_largeobject's pages. Every large
 * object with a page written by a transaction at or after the horizon (the oldest transaction
 * still running when the horizon was taken) and named by a documents row is uploaded again, to
 * the row's blob. Run before the cutover pause (the bulk of it) and inside it (what changed in
 * between). Reading pg_largeobject needs a superuser (or lo_compat_privileges) on the source.
 */
import type pg from 'pg';
import { quoteIdent } from '../plan/names.js';
import { PreconditionError, messageOf } from '../errors.js';
import type { TableTask } from '../engine/tableTask.js';
import type { DocumentSink } from '../sync/apply.js';

export function hasLargeObjectDocuments(tasks: readonly TableTask[]): boolean {
  return tasks.some((t) => t.documents?.contentKind === 'oid');
}

/** Uploads again every large-object document written since `horizon`; returns how many. */
export async function reconcileLargeObjects(
  source: pg.Client,
  sink: DocumentSink,
  tasks: readonly TableTask[],
  horizon: string,
): Promise<number> {
  const loTasks = tasks.filter((t) => t.documents?.contentKind === 'oid');
  if (loTasks.length === 0) return 0;
  // pg_largeobject's xmin is a 32-bit xid: compare by age, which handles wrap-around.
  const xid32 = (BigInt(horizon) % 2n ** 32n).toString();
  let changed: string[];
  try {
    const { rows } = await source.query<{ loid: string }>(
      `SELECT DISTINCT loid::text AS loid FROM pg_largeobject WHERE age(xmin) <= age($1::text::xid)`,
      [xid32],
    );
    changed = rows.map((r) => r.loid);
  } catch (err) {
    throw new PreconditionError(`cannot read pg_largeobject on the source to find changed large-object documents: ${messageOf(err)}`, {
      hint: 'the source connection needs a superuser (or lo_compat_privileges = on) for large-object documents',
    });
  }
  if (changed.length === 0) return 0;
  let count = 0;
  for (const task of loTasks) {
    const content = task.documents!.plan.content;
    const cols = [...task.shape.columns, content];
    const { rows } = await source.query<Record<string, string | null>>(
      `SELECT ${cols.map((c) => `${quoteIdent(c)}::text AS ${quoteIdent(c)}`).join(', ')} FROM ${task.quoted}
        WHERE ${quoteIdent(content)} = ANY($1::oid[])${task.where ? ` AND (${task.where})` : ''}`,
      [changed],
    );
    for (const r of rows) {
      const row = new Map(Object.entries(r));
      const name = sink.name(task, row);
      await sink.upload(task, row, name, { oid: r[content]! });
      count += 1;
    }
  }
  return count;
}
