import type { Knex } from 'knex';

/** Batches whose rows were copied: their `finished_at` is when the copy committed. */
const COPIED = `finished_at IS NOT NULL AND status IN ('copied', 'verified', 'mismatch')`;

export interface CopySpan {
  /** When the first copied batch was claimed (or finished, if its claim was not kept). */
  first: Date | null;
  last: Date | null;
  batches: number;
}

/** First and last moments of the run's copy, over the batches that were copied. */
export async function copySpan(knex: Knex, runId: string): Promise<CopySpan> {
  const { rows } = await knex.raw<{ rows: CopySpan[] }>(
    `SELECT min(coalesce(claimed_at, finished_at)) AS first, max(finished_at) AS last, count(*)::int AS batches
       FROM batches
      WHERE run_id = :runId AND ${COPIED}`,
    { runId },
  );
  return rows[0] ?? { first: null, last: null, batches: 0 };
}

export interface ThroughputBucketRow {
  /** 0-based bucket number: the bucket covers [first + n·bucketMs, first + (n+1)·bucketMs). */
  bucket: number;
  batches: number;
  rows: number;
  bytes: number;
}

/**
 * Rows, bytes and batches copied per time bucket, by the time each batch's copy committed,
 * aggregated by the server (a run can have 100,000 batches; this returns at most a few hundred
 * rows). Empty buckets are not returned.
 */
export async function throughputBuckets(knex: Knex, runId: string, bucketMs: number): Promise<ThroughputBucketRow[]> {
  const { rows } = await knex.raw<{ rows: ThroughputBucketRow[] }>(
    `WITH copied AS (
       SELECT coalesce(claimed_at, finished_at) AS began, finished_at, rows, bytes
         FROM batches
        WHERE run_id = :runId AND ${COPIED}
     ), origin AS (
       SELECT min(began) AS first FROM copied
     )
     SELECT floor(extract(epoch FROM (c.finished_at - o.first)) * 1000 / :bucketMs)::int AS bucket,
            count(*)::int AS batches,
            coalesce(sum(c.rows), 0)::float8 AS rows,
            coalesce(sum(c.bytes), 0)::float8 AS bytes
       FROM copied c CROSS JOIN origin o
      GROUP BY 1
      ORDER BY 1`,
    { runId, bucketMs },
  );
  return rows;
}
