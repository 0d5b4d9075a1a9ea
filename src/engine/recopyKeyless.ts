/**
 * Tables without a key are copied in ctid page ranges, which mean something only inside one
 * snapshot: an update moves a row to another page. A copy resumed from a newer snapshot would
 * find a row moved out of a range copied earlier into one copied now (there twice) or the other
 * way (missing), and the run's own check, the target against the sum of the ranges' digests, each
 * read in its snapshot, would pass. Such a table is copied again whole: its target rows emptied,
 * its batches sent back to pending.
 */
import type pg from 'pg';
import type { StateStore } from '../state/store.js';
import { resetTableBatches } from '../state/sql/batchStatus.js';
import type { BatchStatus } from '../state/types.js';
import type { TableTask } from './tableTask.js';

/** A batch as the rules see it. */
export interface BatchState {
  status: BatchStatus;
  /** Times it was claimed (0: never tried). */
  attempts: number;
}

/** Whether a keyless table with these batches must be copied again whole. */
export type RecopyRule = (batches: readonly BatchState[]) => boolean;

/**
 * Live sync: a table any of whose batches left pending holds rows from before the newer
 * snapshot's consistent point, which its changes would be replayed over (a row inserted twice,
 * one of two equal rows deleted).
 */
export const touchedSinceSnapshot: RecopyRule = (batches) => batches.some((b) => b.status !== 'pending');

/**
 * A copy without live sync: a table copied in part (some batches settled, others not) mixes two
 * snapshots. With the state store outside the target, a batch whose rows committed before its
 * process died is pending again with no trace of them but its attempt (a key range is deleted
 * before it is copied again; a page range cannot be found on the target): its table too.
 */
export function partlyCopied(stateInTarget: boolean): RecopyRule {
  return (batches) => {
    if (batches.every((b) => b.status === 'copied' || b.status === 'verified')) return false;
    return batches.some((b) => b.status !== 'pending' || (!stateInTarget && b.attempts > 0));
  };
}

/**
 * Copies the keyless tables the rule picks again whole; returns their names. With the state
 * store in the target (`target` null) the table is emptied and its batches sent back in one
 * transaction, the table first: a batch a worker is still committing gets in before (its mark
 * too) and is sent back with the others, with no lock taken in the opposite order. With the
 * store elsewhere, the table is emptied on `target` first: a process stopped between the two
 * finds the batches as they were, and empties the table again.
 */
export async function recopyKeyless(
  store: StateStore,
  runId: string,
  tables: readonly TableTask[],
  rule: RecopyRule,
  target: pg.Client | null,
): Promise<string[]> {
  const recopied: string[] = [];
  for (const t of tables.filter((x) => !x.shape.keyColumns)) {
    const batches = (db: StateStore['knex']) =>
      db('batches').where({ run_id: runId, relation: t.display }).select<BatchState[]>('status', 'attempts');
    let done = false;
    if (target === null) {
      done = await store.knex.transaction(async (trx) => {
        if (!rule(await batches(trx))) return false;
        await trx.raw(`TRUNCATE ${t.quoted}`);
        await resetTableBatches(trx, runId, t.display);
        return true;
      });
    } else if (rule(await batches(store.knex))) {
      await target.query(`TRUNCATE ${t.quoted}`);
      await resetTableBatches(store.knex, runId, t.display);
      done = true;
    }
    if (done) recopied.push(t.display);
  }
  return recopied;
}
