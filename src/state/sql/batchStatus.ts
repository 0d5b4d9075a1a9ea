/**
 * Batch status changes on the copy's hot path. Each takes any Queryable, so the "copied" mark
 * can commit in the same target transaction as the batch's rows when the state store lives in
 * the target database (the default): a batch is then never counted done without its rows.
 */
import { quoteIdent } from '../../plan/names.js';

export interface Queryable {
  query(text: string, params?: unknown[]): Promise<{ rowCount: number | null }>;
}

const t = (schema: string) => `${quoteIdent(schema)}.batches`;

/** Marks a batch claimed by `workerId` as copied. Returns false if the claim was lost. */
export async function markBatchCopied(
  db: Queryable,
  schema: string,
  batch: { id: string; workerId: string; rows: number; bytes: number; sourceChecksum: string },
): Promise<boolean> {
  const r = await db.query(
    `UPDATE ${t(schema)} SET status = 'copied', rows = $3, bytes = $4, source_checksum = $5, finished_at = now(), error = NULL
      WHERE id = $1 AND status = 'claimed' AND claimed_by = $2`,
    [batch.id, batch.workerId, batch.rows, batch.bytes, batch.sourceChecksum],
  );
  return r.rowCount === 1;
}

export async function markBatchVerified(db: Queryable, schema: string, id: string, targetChecksum: string): Promise<void> {
  await db.query(`UPDATE ${t(schema)} SET status = 'verified', target_checksum = $2, error = NULL WHERE id = $1`, [id, targetChecksum]);
}

export async function markBatchMismatch(db: Queryable, schema: string, id: string, targetChecksum: string, error: string): Promise<void> {
  await db.query(`UPDATE ${t(schema)} SET status = 'mismatch', target_checksum = $2, error = $3 WHERE id = $1`, [
    id,
    targetChecksum,
    error,
  ]);
}

/**
 * A batch goes to `workerId` for another attempt (after a mismatch): the worker that found it,
 * which is not always the one that copied it (a batch a dead worker committed but never verified).
 */
export async function markBatchRetry(db: Queryable, schema: string, id: string, workerId: string, error: string): Promise<void> {
  await db.query(
    `UPDATE ${t(schema)} SET status = 'claimed', claimed_by = $3, claimed_at = now(), attempts = attempts + 1, error = $2, started_at = now() WHERE id = $1`,
    [id, error, workerId],
  );
}

/** A full verify found a table matching (after repair): its mismatched batches are settled. */
export async function clearTableMismatches(db: Queryable, schema: string, runId: string, relation: string): Promise<number> {
  const r = await db.query(
    `UPDATE ${t(schema)} SET status = 'verified', error = NULL WHERE run_id = $1 AND relation = $2 AND status = 'mismatch'`,
    [runId, relation],
  );
  return r.rowCount ?? 0;
}
