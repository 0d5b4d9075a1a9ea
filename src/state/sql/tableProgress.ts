import type { Knex } from 'knex';
import { BATCH_BEGAN } from './throughputBuckets.js';

export interface TableProgressRow {
  relation: string;
  kind: 'table' | 'documents';
  total: number;
  pending: number;
  in_flight: number;
  copied: number;
  verified: number;
  mismatched: number;
  failed: number;
  rows: number;
  bytes: number;
  /**
   * Rows and bytes copied in the last `windowSeconds`: of each batch finished in the window, the
   * share of its copy (from its claim to its commit) that falls in the window; and how many
   * batches finished in it.
   */
  recent_rows: number;
  recent_bytes: number;
  recent_batches: number;
  /**
   * Seconds the work measured by the recent figures has been going: since the earliest claim of
   * a batch finished in the window or in flight, at most `windowSeconds` (a copy that began or
   * resumed 10 s ago is measured over 10 s, not the whole window). Null when nothing is.
   */
  recent_seconds: number | null;
  first_started: Date | null;
  last_finished: Date | null;
}

/**
 * Batches whose rows are on the target now. One sent back for another attempt keeps its last
 * figures until it is copied again: they are not counted meanwhile.
 */
const DONE = `status IN ('copied', 'verified', 'mismatch')`;

/**
 * Per-table totals of a run, aggregated by the server in one pass over the run's batches (index
 * on run_id): `status` must answer in well under a second on a run with 100,000 batches.
 */
export async function tableProgress(knex: Knex, runId: string, windowSeconds: number): Promise<TableProgressRow[]> {
  const { rows } = await knex.raw<{ rows: Array<Record<string, unknown>> }>(
    `SELECT relation, kind,
            count(*)::int AS total,
            count(*) FILTER (WHERE status = 'pending')::int AS pending,
            count(*) FILTER (WHERE status = 'claimed')::int AS in_flight,
            count(*) FILTER (WHERE status = 'copied')::int AS copied,
            count(*) FILTER (WHERE status = 'verified')::int AS verified,
            count(*) FILTER (WHERE status = 'mismatch')::int AS mismatched,
            count(*) FILTER (WHERE status = 'failed')::int AS failed,
            coalesce(sum(rows) FILTER (WHERE ${DONE}), 0)::float8 AS rows,
            coalesce(sum(bytes) FILTER (WHERE ${DONE}), 0)::float8 AS bytes,
            coalesce(sum(rows * share) FILTER (WHERE ${DONE} AND finished_at > now() - make_interval(secs => :window)), 0)::float8 AS recent_rows,
            coalesce(sum(bytes * share) FILTER (WHERE ${DONE} AND finished_at > now() - make_interval(secs => :window)), 0)::float8 AS recent_bytes,
            count(*) FILTER (WHERE ${DONE} AND finished_at > now() - make_interval(secs => :window))::int AS recent_batches,
            least(:window, greatest(1, extract(epoch FROM now() - min(claimed_at)
              FILTER (WHERE finished_at > now() - make_interval(secs => :window) OR status = 'claimed'))))::float8 AS recent_seconds,
            min(claimed_at) AS first_started,
            max(finished_at) AS last_finished
       FROM (SELECT b.*,
                    CASE WHEN b.finished_at <= b.began THEN 1
                         ELSE extract(epoch FROM b.finished_at - greatest(b.began, now() - make_interval(secs => :window)))
                              / extract(epoch FROM b.finished_at - b.began) END AS share
               FROM (SELECT *, ${BATCH_BEGAN} AS began FROM batches WHERE run_id = :runId) b) batches
      GROUP BY relation, kind
      ORDER BY sum(coalesce(bytes, 0)) DESC, relation`,
    { runId, window: windowSeconds },
  );
  return rows as unknown as TableProgressRow[];
}
