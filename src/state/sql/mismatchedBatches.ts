import type { Knex } from 'knex';

export interface MismatchedBatchRow {
  relation: string;
  seq: number;
  status: 'mismatch' | 'failed';
  key_low: unknown;
  key_high: unknown;
  rows: number | null;
  attempts: number;
  error: string | null;
  finished_at: Date | null;
  /** How many such batches the run has in all (the list is capped at `limit`). */
  total: number;
}

/**
 * The run's batches that failed verification (or failed outright), with their key ranges and
 * errors, in table and key order; at most `limit` of them, each row carrying the full count.
 */
export async function mismatchedBatches(knex: Knex, runId: string, limit: number): Promise<MismatchedBatchRow[]> {
  const { rows } = await knex.raw<{ rows: MismatchedBatchRow[] }>(
    `SELECT relation, seq, status, key_low, key_high, rows::float8 AS rows, attempts, error, finished_at,
            count(*) OVER ()::int AS total
       FROM batches
      WHERE run_id = :runId AND status IN ('mismatch', 'failed')
      ORDER BY relation, seq
      LIMIT :limit`,
    { runId, limit },
  );
  return rows;
}
