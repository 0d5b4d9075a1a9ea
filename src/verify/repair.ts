/**
 * Repairs exactly the rows that differ: in one target transaction, the differing keys are
 * deleted and the source's versions of the missing and different rows copied back in (COPY, as
 * the bulk copy does), with the target's triggers and foreign keys quiet. Extra rows are only
 * deleted (their children, if any, are reported when those tables are verified). A table without
 * a key, whose rows cannot be told apart, is copied back whole the same way.
 */
import { pipeline } from 'node:stream/promises';
import pgCopyStreams from 'pg-copy-streams';
import { quoteIdent } from '../plan/names.js';
import { keysPredicate } from '../source/ranges.js';
import type { TableTask } from '../engine/tableTask.js';
import type { Difference, Sides } from './differences.js';

const { from: copyFrom, to: copyTo } = pgCopyStreams;

export async function repairRows(sides: Sides, task: TableTask, differences: Difference[]): Promise<number> {
  const keys = task.shape.keyColumns!;
  const all = differences.map((d) => d.key);
  const fromSource = differences.filter((d) => d.kind !== 'extra').map((d) => d.key);
  await copyBack(sides, task, keysPredicate(keys, all), fromSource.length > 0 ? keysPredicate(keys, fromSource) : null);
  return all.length;
}

/** A table without a key, whose rows cannot be told apart: all of them, in one transaction. */
export async function repairWhole(sides: Sides, task: TableTask): Promise<void> {
  await copyBack(sides, task, 'true', 'true');
}

/**
 * In one target transaction, deletes the target's rows matching `remove` and copies the source's
 * rows matching `copy` (none when null) back in.
 */
async function copyBack(sides: Sides, task: TableTask, remove: string, copy: string | null): Promise<void> {
  const cols = task.shape.columns.map(quoteIdent).join(', ');
  const format = task.shape.format;
  await sides.target.query('BEGIN');
  try {
    // As live sync applies: the target's foreign keys and triggers do not fire. A row other tables
    // reference is replaced, not deleted: a cascade would take matching children with it, and a
    // plain foreign key would refuse the repair.
    await sides.target.query(`SET LOCAL session_replication_role = replica`);
    await sides.target.query(`DELETE FROM ${task.quoted} WHERE ${remove}`);
    if (copy !== null) {
      const filter = task.where ? ` AND (${task.where})` : '';
      const out = sides.source.query(
        copyTo(`COPY (SELECT ${cols} FROM ${task.quoted} WHERE ${copy}${filter}) TO STDOUT (FORMAT ${format})`),
      );
      const into = sides.target.query(copyFrom(`COPY ${task.quoted} (${cols}) FROM STDIN (FORMAT ${format})`));
      await pipeline(out, into);
    }
    await sides.target.query('COMMIT');
  } catch (err) {
    await sides.target.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
}
