/**
 * Copies one batch and verifies it. Invariants:
 * - the source rows are read inside the run's snapshot (when it is still held) and streamed
 *   through COPY into the target; nothing is held whole in memory;
 * - the rows and the "copied" mark commit in one target transaction when the state store is in
 *   the target database; a retried key-range batch first deletes its range, so a batch is never
 *   applied twice;
 * - the checksum is computed from the rows as they are in the target after the commit and
 *   compared with the source's digest of the same range.
 */
import { pipeline } from 'node:stream/promises';
import { Writable } from 'node:stream';
import type pg from 'pg';
import pgCopyStreams from 'pg-copy-streams';
import { quoteIdent } from '../plan/names.js';
import { copyOut } from '../pg/copyOut.js';
import { batchSelect, rangePredicate, type BatchRange } from '../source/ranges.js';
import { markBatchCopied } from '../state/sql/batchStatus.js';
import { advisoryHolders } from '../state/sql/workers.js';
import type { BatchRow } from '../state/types.js';
import { digestText, parseDigest, RowSumDigest, StreamDigest, type Digest } from '../verify/rowDigest.js';
import { beginInSnapshot } from './snapshot.js';
import type { EngineHooks } from './hooks.js';
import { rangeOf, type TableTask } from './tableTask.js';

const { from: copyFrom } = pgCopyStreams;

/**
 * The batch was given to another worker meanwhile (this one was taken for gone: its heartbeat
 * lapsed). Its transaction rolls back; the other worker's copy is the one that counts.
 */
export class ClaimLostError extends Error {}

export interface CopyBatchContext {
  source: pg.Client;
  target: pg.Client;
  snapshot: string | null;
  /** Schema of the state store when it lives in the target database; null otherwise. */
  stateSchemaInTarget: string | null;
  workerId: string;
  hooks: EngineHooks;
}

export interface CopiedBatch {
  digest: Digest;
  bytes: number;
  /** False when the state mark must still be written outside the target transaction. */
  marked: boolean;
}

export async function copyBatch(ctx: CopyBatchContext, task: TableTask, batch: BatchRow, retry: boolean): Promise<CopiedBatch> {
  const format = task.shape.format;
  return inBatchTransaction(ctx, task, batch, retry, async (range) => {
    const select = batchSelect(task.quoted, task.shape.columns, range, task.shape.keyColumns ?? [], task.where);
    const digester = digesterFor(task);
    const out = copyOut(ctx.source, `COPY (${select}) TO STDOUT (FORMAT ${format})`);
    const into = ctx.target.query(
      copyFrom(`COPY ${task.quoted} (${task.shape.columns.map(quoteIdent).join(', ')}) FROM STDIN (FORMAT ${format})`),
    );
    await pipeline(out.stream, digester, into);
    const digest = digester.result(await out.rowCount);
    if (into.rowCount !== digest.rows)
      throw new Error(`${task.display} batch ${batch.seq}: read ${digest.rows} rows, the target took ${into.rowCount}`);
    return { digest, bytes: digester.bytes };
  });
}

/**
 * The envelope every batch is written in, whatever it carries (rows, or rows and documents):
 * settles an ambiguous earlier commit by the batch's own mark, reads the source inside the
 * snapshot, deletes a retried key range first, and commits the rows with the batch's "copied"
 * mark in one target transaction, calling the hooks around the commit.
 */
export async function inBatchTransaction<T extends { digest: Digest; bytes: number }>(
  ctx: CopyBatchContext,
  task: TableTask,
  batch: BatchRow,
  retry: boolean,
  write: (range: BatchRange) => Promise<T>,
): Promise<CopiedBatch & Partial<T>> {
  if (retry && ctx.stateSchemaInTarget !== null) {
    // After an ambiguous commit (the connection died during COMMIT) the batch may be done already:
    // its mark committed with its rows, so the mark is the truth.
    const done = await copiedMark(ctx.target, ctx.stateSchemaInTarget, batch.id);
    // Settled by the mark: what the write would have returned beyond digest and bytes is absent.
    if (done) return done as CopiedBatch & Partial<T>;
  }
  const range = rangeOf(task, batch);
  const ref = { table: task.display, batchId: batch.id, seq: batch.seq };
  await beginInSnapshot(ctx.source, ctx.snapshot);
  let failed = true;
  try {
    const lock = `cloudshift.batch:${batch.id}`;
    if (retry) await endStaleHolder(ctx.target, lock);
    await ctx.target.query('BEGIN');
    try {
      // Held until the transaction ends: a later attempt knows whether this one is still open.
      await ctx.target.query(`SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, [lock]);
      await ctx.hooks.beforeBatchWrite?.(ref);
      if (retry && range.kind === 'key') {
        const pred = rangePredicate(range, task.shape.keyColumns!);
        await ctx.target.query(`DELETE FROM ${task.quoted} WHERE ${pred.sql}`, pred.params);
      }
      const written = await write(range);
      await ctx.hooks.beforeBatchCommit?.(ref);
      let marked = false;
      if (ctx.stateSchemaInTarget !== null) {
        marked = await markBatchCopied(ctx.target, ctx.stateSchemaInTarget, {
          id: batch.id,
          workerId: ctx.workerId,
          rows: written.digest.rows,
          bytes: written.bytes,
          sourceChecksum: digestText(written.digest),
          snapshot: ctx.snapshot,
        });
        if (!marked)
          throw new ClaimLostError(
            `batch ${batch.id} of ${task.display} is no longer this worker's (claimed by another, or the run resumed from a newer snapshot)`,
          );
      }
      await ctx.target.query('COMMIT');
      failed = false;
      await ctx.hooks.afterBatchCommit?.(ref);
      return { ...written, marked };
    } catch (err) {
      await ctx.target.query('ROLLBACK').catch(() => undefined);
      throw err;
    }
  } finally {
    // A failed batch may have left the source inside a COPY it stopped reading (the stream is
    // destroyed, the server still sending): a query would wait behind it forever. Ending the
    // session drops the socket and the snapshot's transaction; its slot connects afresh.
    if (failed) await ctx.source.end().catch(() => undefined);
    else await ctx.source.query('COMMIT').catch(() => undefined);
  }
}

/**
 * Ends a session that still holds a batch's lock (`lock`), as another attempt is about to copy
 * the batch: it belongs to a process whose claim was taken back (hung, stopped, or cut off from
 * the state store) with its transaction open, and its uncommitted rows would hold this copy up
 * for good. That process finds its claim gone.
 */
async function endStaleHolder(target: pg.Client, lock: string): Promise<void> {
  await target
    .query(`SELECT pg_terminate_backend(pid) FROM (${advisoryHolders('$1')}) h WHERE pid <> pg_backend_pid()`, [lock])
    // Not allowed (another role's session): the batch's lock then waits for it instead.
    .catch(() => undefined);
}

async function copiedMark(target: pg.Client, schema: string, batchId: string): Promise<CopiedBatch | null> {
  const { rows } = await target.query<{ status: string; bytes: string | null; source_checksum: string | null }>(
    `SELECT status, bytes::text AS bytes, source_checksum FROM ${quoteIdent(schema)}.batches WHERE id = $1`,
    [batchId],
  );
  const r = rows[0];
  if (!r || r.status !== 'copied' || !r.source_checksum) return null;
  return { digest: parseDigest(r.source_checksum), bytes: Number(r.bytes ?? 0), marked: true };
}

/**
 * Digest of a range's rows as they are on one side now. `batch` null: the whole table (a keyless
 * table is verified whole: ctid ranges mean nothing on the other side). `where` applies the
 * plan's row filter (source side only).
 */
export async function digestRange(
  client: pg.Client,
  task: TableTask,
  batch: Pick<BatchRow, 'key_low' | 'key_high'> | null,
  where?: string,
  /** A documents table's target rows with their kept blob names (as the copy digests its source rows). */
  withKept = false,
): Promise<Digest> {
  const range = batch ? rangeOf(task, batch) : ({ kind: 'key', low: null, high: null } as const);
  const kept = withKept && task.documents ? [task.documents.plan.keepColumn] : [];
  const select = batchSelect(task.quoted, [...task.shape.columns, ...kept], range, task.shape.keyColumns ?? [], where);
  const digester = digesterFor(task);
  const sink = new Writable({ write: (_c, _e, cb) => cb() });
  const out = copyOut(client, `COPY (${select}) TO STDOUT (FORMAT ${task.shape.format})`);
  await pipeline(out.stream, digester, sink);
  return digester.result(await out.rowCount);
}

/** Keyed tables are read in key order and hashed as a stream; keyless ones row by row. */
function digesterFor(task: TableTask): StreamDigest | RowSumDigest {
  return task.shape.keyColumns ? new StreamDigest() : new RowSumDigest(task.shape.format);
}
