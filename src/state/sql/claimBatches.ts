import type { Knex } from 'knex';
import type { BatchRow } from '../types.js';

/**
 * Claims up to `limit` pending batches of a run for one worker. SKIP LOCKED lets any number of
 * workers claim at once without waiting on each other or claiming the same batch twice. None
 * once the run ended (a rollback before cutover, a cleanup), nor while the run's plan is another
 * than the worker's (`fingerprint`): a leader resumed the run with --force and a changed plan,
 * and a worker still on the old one must not copy by it.
 */
export async function claimBatches(knex: Knex, runId: string, workerId: string, limit: number, fingerprint: string): Promise<BatchRow[]> {
  const { rows } = await knex.raw<{ rows: BatchRow[] }>(
    `UPDATE batches AS b
        SET status = 'claimed', claimed_by = :workerId, claimed_at = now(), attempts = b.attempts + 1
      WHERE b.id IN (
              SELECT id FROM batches
               WHERE run_id = :runId AND status = 'pending'
                 AND EXISTS (SELECT 1 FROM runs r WHERE r.id = :runId AND r.status = 'active' AND r.plan_fingerprint = :fingerprint)
               ORDER BY id
               LIMIT :limit
               FOR UPDATE SKIP LOCKED)
      RETURNING b.*`,
    { runId, workerId, limit, fingerprint },
  );
  return rows;
}
