import type { Knex } from 'knex';

/** Batches whose rows were copied: their `finished_at` is when the copy committed. */
const COPIED = `finished_at IS NOT NULL AND status IN ('copied', 'verified', 'mismatch')`;

/** When a copied batch's last attempt began: its claim, or its retry (never after it finished). */
export const BATCH_BEGAN = `least(coalesce(greatest(started_at, claimed_at), finished_at), finished_at)`;

export interface CopySpan {
  /** When the first copied batch was claimed (or finished, if its claim was not kept). */
  first: Date | null;
  last: Date | null;
  batches: number;
}

/** First and last moments of the run's copy, over the batches that were copied. */
export async function copySpan(knex: Knex, runId: string): Promise<CopySpan> {
  const { rows } = await knex.raw<{ rows: CopySpan[] }>(
    `SELECT min(${BATCH_BEGAN}) AS first, max(finished_at) AS last, count(*)::int AS batches
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
 * Rows, bytes and batches copied per time bucket, aggregated by the server (a run can have
 * 100,000 batches; this returns at most a few hundred rows). A batch's rows and bytes are spread
 * over the buckets its copy spans (from its start to its commit), in proportion to the time in
 * each, so a bucket shorter than a batch does not show the whole batch as one spike; a batch is
 * counted in the bucket where it committed. Empty buckets are not returned.
 */
export async function throughputBuckets(knex: Knex, runId: string, bucketMs: number): Promise<ThroughputBucketRow[]> {
  const { rows } = await knex.raw<{ rows: ThroughputBucketRow[] }>(
    `WITH copied AS (
       SELECT ${BATCH_BEGAN} AS began, finished_at, rows, bytes
         FROM batches
        WHERE run_id = :runId AND ${COPIED}
     ), origin AS (
       SELECT min(began) AS first FROM copied
     ), spans AS (
       SELECT extract(epoch FROM (c.began - o.first)) * 1000 AS b0,
              extract(epoch FROM (c.finished_at - o.first)) * 1000 AS b1,
              c.rows, c.bytes
         FROM copied c CROSS JOIN origin o
     ), pieces AS (
       SELECT n AS bucket,
              CASE WHEN s.b1 = s.b0 THEN 1
                   ELSE (least(s.b1, (n + 1) * :bucketMs::float8) - greatest(s.b0, n * :bucketMs::float8)) / (s.b1 - s.b0) END AS share,
              floor(s.b1 / :bucketMs)::int = n AS committed_here,
              s.rows, s.bytes
         FROM spans s
         CROSS JOIN LATERAL generate_series(floor(s.b0 / :bucketMs)::int, floor(s.b1 / :bucketMs)::int) AS n
     )
     SELECT bucket,
            count(*) FILTER (WHERE committed_here)::int AS batches,
            coalesce(sum(rows * share), 0)::float8 AS rows,
            coalesce(sum(bytes * share), 0)::float8 AS bytes
       FROM pieces
      GROUP BY 1
      ORDER BY 1`,
    { runId, bucketMs },
  );
  return rows;
}
