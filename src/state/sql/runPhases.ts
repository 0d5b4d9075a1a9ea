import type { Knex } from 'knex';

export interface RunPhaseRow {
  /** The phase name, from the `run:phase` event's message ("phase copy"). */
  phase: string;
  started_at: Date;
  /** Kind of the next run-level marker (`run:phase`, `run:done`, `run:interrupted`, `run:resume`); null for the last one. */
  next_kind: string | null;
  next_at: Date | null;
  /**
   * Only when the phase has no recorded end (the process stopped without saying so, or the run
   * is still in it): the last recorded activity (event or finished batch) in the phase.
   */
  last_activity: Date | null;
}

/**
 * The phases of a run as spans, from its `run:phase` events: each one ends at the next run-level
 * marker. Where the process vanished (kill -9, a crash) the next marker is a `run:resume`, which
 * may come much later, so the span ends at the last activity recorded before it instead.
 * Aggregated by the server over the event index (run_id, id) and, for open spans only, the run's
 * batches.
 */
export async function runPhases(knex: Knex, runId: string): Promise<RunPhaseRow[]> {
  const { rows } = await knex.raw<{ rows: RunPhaseRow[] }>(
    `WITH marks AS (
       SELECT id, at, kind, message,
              lead(kind) OVER w AS next_kind,
              lead(at) OVER w AS next_at,
              lead(id) OVER w AS next_id
         FROM events
        WHERE run_id = :runId AND kind IN ('run:phase', 'run:done', 'run:interrupted', 'run:resume')
       WINDOW w AS (ORDER BY id)
     )
     SELECT coalesce(substring(m.message FROM '^phase (.*)$'), m.message) AS phase,
            m.at AS started_at,
            m.next_kind,
            m.next_at,
            CASE WHEN m.next_kind IS NULL OR m.next_kind = 'run:resume' THEN
              greatest(
                (SELECT max(e.at) FROM events e
                  WHERE e.run_id = :runId AND e.id > m.id AND (m.next_id IS NULL OR e.id < m.next_id)),
                (SELECT max(b.finished_at) FROM batches b
                  WHERE b.run_id = :runId AND b.finished_at >= m.at AND (m.next_at IS NULL OR b.finished_at < m.next_at)))
            END AS last_activity
       FROM marks m
      WHERE m.kind = 'run:phase'
      ORDER BY m.id`,
    { runId },
  );
  return rows;
}
