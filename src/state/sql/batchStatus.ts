/**
 * Batch status changes on the copy's hot path. Each takes any Queryable, so the "copied" mark
 * can commit in the same target transaction as the batch's rows when the state store lives in
 * the target database (the default): a batch is then never counted done without its rows.
 */
import type { Knex } from 'knex';
import type pg from 'pg';
import { quoteIdent } from '../../plan/names.js';
import { markRecordMismatch } from './documents.js';

export interface Queryable {
  query(text: string, params?: unknown[]): Promise<{ rowCount: number | null }>;
}

const t = (schema: string) => `${quoteIdent(schema)}.batches`;

/**
 * Marks a batch claimed by `workerId` as copied, finished now: the clock's time, not the
 * transaction's start (the mark commits with the batch's rows, in a transaction begun before the
 * COPY and the uploads). Returns false if the claim was lost, or if the
 * run has moved to another snapshot than the one the batch was read in (`snapshot`): a process
 * that lost the run's lock without knowing (its state-store session cut) must not mark rows of a
 * snapshot older than the one the new leader resumed from.
 */
export async function markBatchCopied(
  db: Queryable,
  schema: string,
  batch: { id: string; workerId: string; rows: number; bytes: number; sourceChecksum: string; snapshot: string | null },
): Promise<boolean> {
  const r = await db.query(
    // A checksum of the target's rows from an earlier attempt says nothing of these.
    `UPDATE ${t(schema)} b SET status = 'copied', rows = $3, bytes = $4, source_checksum = $5, target_checksum = NULL, finished_at = clock_timestamp(), error = NULL
      WHERE id = $1 AND status = 'claimed' AND claimed_by = $2
        AND ($6::text IS NULL OR EXISTS (SELECT 1 FROM ${quoteIdent(schema)}.runs r WHERE r.id = b.run_id AND r.snapshot_name = $6))`,
    [batch.id, batch.workerId, batch.rows, batch.bytes, batch.sourceChecksum, batch.snapshot],
  );
  return r.rowCount === 1;
}

/*
 * Verdicts. Each applies only to a batch still copied (not yet settled: a verifier that comes
 * late, while another process settled the batch and the sync moved on, must not undo that), and
 * only to the copy it judged, named by its source checksum (a process that read its digest
 * slowly may find the batch sent back and copied again by another). Each returns whether it applied.
 */

/** The copy a verdict is on: the batch, its copy's source checksum, the target's digest of it. */
export interface Judged {
  id: string;
  sourceChecksum: string;
  targetChecksum: string;
}

async function verdict(db: Queryable, schema: string, j: Judged, set: string, statuses: string, extra: unknown[] = []): Promise<boolean> {
  const r = await db.query(
    `UPDATE ${t(schema)} SET target_checksum = $3, ${set} WHERE id = $1 AND source_checksum = $2 AND status IN (${statuses})`,
    [j.id, j.sourceChecksum, j.targetChecksum, ...extra],
  );
  return r.rowCount === 1;
}

export const markBatchVerified = (db: Queryable, schema: string, j: Judged) =>
  verdict(db, schema, j, `status = 'verified', error = NULL`, `'copied', 'verified'`);

export const markBatchMismatch = (db: Queryable, schema: string, j: Judged, error: string) =>
  verdict(db, schema, j, `status = 'mismatch', error = $4`, `'copied'`, [error]);

/** A documents batch whose rows match: it stays copied until the sweep has verified its documents. */
export const markRowsVerified = (db: Queryable, schema: string, j: Judged) => verdict(db, schema, j, 'error = NULL', `'copied'`);

/**
 * A batch goes to `workerId` for another attempt (after a mismatch): the worker that found it,
 * which is not always the one that copied it (a batch a dead worker committed but never verified).
 */
export async function markBatchRetry(db: Queryable, schema: string, id: string, workerId: string, error: string): Promise<boolean> {
  const r = await db.query(
    `UPDATE ${t(schema)} SET status = 'claimed', claimed_by = $3, claimed_at = now(), attempts = attempts + 1, error = $2, started_at = now()
      WHERE id = $1 AND status = 'copied'`,
    [id, error, workerId],
  );
  return r.rowCount === 1;
}

/** A full verify found a table matching (after repair): its mismatched batches are settled. */
export async function clearTableMismatches(db: Queryable, schema: string, runId: string, relation: string): Promise<number> {
  const r = await db.query(
    `UPDATE ${t(schema)} SET status = 'verified', error = NULL WHERE run_id = $1 AND relation = $2 AND status = 'mismatch'`,
    [runId, relation],
  );
  return r.rowCount ?? 0;
}

/**
 * Copied documents batches that hold a record a sweep found wrong go back to pending, not
 * counted as a sweep's return: their attempt was under way when another sweep marked the record
 * (returnForDocuments, a claimed batch), read it before the mark, and kept the blob. The next
 * attempt reads the mark and uploads the document again. Without this such a batch would never
 * settle, as the sweep checks only records still 'uploaded'.
 */
export async function returnBatchesHoldingWrong(
  db: pg.Pool,
  schema: string,
  runId: string,
  relations: string[],
): Promise<Array<{ id: string; relation: string; seq: number; attempts: number }>> {
  const { rows } = await db.query<{ id: string; relation: string; seq: number; attempts: number }>(
    `UPDATE ${t(schema)} AS b SET status = 'pending', claimed_by = NULL, target_checksum = NULL,
            error = 'a document found wrong while an attempt copied the batch was kept by it'
      WHERE b.run_id = $1 AND b.relation = ANY($2::text[]) AND b.status = 'copied'
        AND EXISTS (SELECT 1 FROM ${quoteIdent(schema)}.documents d WHERE d.batch_id = b.id AND d.status = 'mismatch')
      RETURNING b.id::text AS id, b.relation, b.seq, b.attempts`,
    [runId, relations],
  );
  return rows;
}

/** Documents batches whose rows match and whose documents are all verified become verified. */
export async function settleDocumentBatches(
  db: pg.Pool,
  schema: string,
  runId: string,
  relations: string[],
): Promise<Array<{ id: string; relation: string; seq: number }>> {
  const { rows } = await db.query<{ id: string; relation: string; seq: number }>(
    `UPDATE ${t(schema)} AS b SET status = 'verified'
      WHERE b.run_id = $1 AND b.relation = ANY($2::text[]) AND b.status = 'copied' AND b.target_checksum IS NOT NULL
        AND NOT EXISTS (SELECT 1 FROM ${quoteIdent(schema)}.documents d WHERE d.batch_id = b.id AND d.status <> 'verified')
      RETURNING b.id::text AS id, b.relation, b.seq`,
    [runId, relations],
  );
  return rows;
}

/**
 * A copied batch with documents found wrong goes back to pending for another attempt (or, if the
 * sweep gave it one already, is a mismatch: a claim a crash cut short is no such attempt), and
 * the records of those documents are marked a mismatch, so the attempt uploads them again (it
 * neither skips them nor takes their blobs for uploads a kill left unrecorded): one transaction,
 * so no crash in between and no other process's settle (settleDocumentBatches) can see the batch
 * still copied with its wrong documents unmarked, and call it verified. A batch another process's
 * sweep settled meanwhile (it listed before the blob went wrong, or did not sample it) is a
 * mismatch; one another sweep sent back first has those records marked too. Returns what the
 * batch became (null: unchanged).
 */
export async function returnForDocuments(
  db: pg.Pool,
  schema: string,
  runId: string,
  batchId: string,
  wrong: Array<{ relation: string; key: string[]; uploadedAt: string }>,
  error: string,
): Promise<'pending' | 'mismatch' | null> {
  const client = await db.connect();
  try {
    await client.query('BEGIN');
    // Locked first: a settle waits for this verdict, or this one sees the batch settled.
    const { rows } = await client.query<{ status: string }>(`SELECT status FROM ${t(schema)} WHERE id = $1 FOR UPDATE`, [batchId]);
    const status = rows[0]?.status;
    let became: 'pending' | 'mismatch' | null = null;
    if (status === 'verified') {
      let still = 0;
      for (const w of wrong) if (await markRecordMismatch(client, schema, runId, w)) still += 1;
      // Records written since belong to a later upload (live sync): nothing found wrong is left.
      if (still > 0) {
        await client.query(`UPDATE ${t(schema)} SET status = 'mismatch', error = $2 WHERE id = $1`, [batchId, error]);
        became = 'mismatch';
      }
    } else {
      // What was found wrong is marked so, never forgotten: the batch's next attempt (or the one
      // under way, when another sweep sent it back first) uploads it again, and does not take
      // the blob for an upload a kill left unrecorded.
      let marked = 0;
      for (const w of wrong) if (await markRecordMismatch(client, schema, runId, w)) marked += 1;
      // Records written since (another sweep returned the batch first, and it was copied again):
      // what was found wrong is gone already, and the new attempt waits for its own sweep.
      if (status === 'copied' && marked > 0) {
        // Its rows are checked again with the attempt.
        const retried = await client.query(
          `UPDATE ${t(schema)} SET status = 'pending', claimed_by = NULL, target_checksum = NULL, error = $2, sweep_returns = sweep_returns + 1
            WHERE id = $1 AND sweep_returns < 1`,
          [batchId, error],
        );
        if (retried.rowCount !== 1)
          await client.query(`UPDATE ${t(schema)} SET status = 'mismatch', error = $2 WHERE id = $1`, [batchId, error]);
        became = retried.rowCount === 1 ? 'pending' : 'mismatch';
      }
    }
    await client.query('COMMIT');
    return became;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    client.release();
  }
}

/** Every batch of a table not pending back to pending, as never copied (the table is copied again whole). */
export async function resetTableBatches(knex: Knex, runId: string, relation: string): Promise<number> {
  return knex('batches').where({ run_id: runId, relation }).whereNot({ status: 'pending' }).update({
    status: 'pending',
    claimed_by: null,
    claimed_at: null,
    rows: null,
    bytes: null,
    source_checksum: null,
    target_checksum: null,
    finished_at: null,
    error: null,
    sweep_returns: 0,
  });
}
