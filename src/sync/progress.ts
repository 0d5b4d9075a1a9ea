/**
 * Where the applied position is kept, written inside each apply transaction:
 * - the state store's applied_lsn row, when the state store lives in the apply side's database
 *   (the default: forward sync into the target);
 * - a replication origin on the apply side otherwise (reverse sync into the source at rollback),
 *   which PostgreSQL advances atomically with the commit.
 */
import type pg from 'pg';
import { quoteIdent } from '../plan/names.js';
import { formatLsn, parseLsn, type Lsn } from './lsn.js';
import type { Progress } from './apply.js';

export function stateProgress(schema: string, runId: string, start: Lsn): Progress {
  const table = `${quoteIdent(schema)}.applied_lsn`;
  return {
    async load(target) {
      const { rows } = await target.query<{ lsn: string }>(`SELECT lsn::text AS lsn FROM ${table} WHERE run_id = $1`, [runId]);
      return rows[0] ? parseLsn(rows[0].lsn) : start;
    },
    async save(target, lsn, commitTime) {
      await target.query(
        `INSERT INTO ${table} (run_id, lsn, source_commit_at, applied_at) VALUES ($1, $2::pg_lsn, $3, clock_timestamp())
         ON CONFLICT (run_id) DO UPDATE SET lsn = EXCLUDED.lsn, source_commit_at = EXCLUDED.source_commit_at, applied_at = EXCLUDED.applied_at`,
        [runId, formatLsn(lsn), commitTime],
      );
    },
  };
}

export function originProgress(origin: string, start: Lsn): Progress {
  return {
    async load(target) {
      await target.query(
        `SELECT pg_replication_origin_create($1) WHERE NOT EXISTS (SELECT 1 FROM pg_replication_origin WHERE roname = $1)`,
        [origin],
      );
      const { rows } = await target.query<{ lsn: string | null }>(`SELECT pg_replication_origin_progress($1, true)::text AS lsn`, [origin]);
      await target.query(`SELECT pg_replication_origin_session_setup($1)`, [origin]);
      const at = rows[0]?.lsn ? parseLsn(rows[0].lsn) : 0n;
      return at > start ? at : start;
    },
    async save(target, lsn, commitTime) {
      await target.query(`SELECT pg_replication_origin_xact_setup($1::pg_lsn, $2)`, [formatLsn(lsn), commitTime]);
    },
  };
}

/** Reads the forward applied position (for cutover, status), without an apply session. */
export async function appliedPosition(db: pg.Client | pg.Pool, schema: string, runId: string): Promise<Lsn | null> {
  const { rows } = await db.query<{ lsn: string }>(`SELECT lsn::text AS lsn FROM ${quoteIdent(schema)}.applied_lsn WHERE run_id = $1`, [
    runId,
  ]);
  return rows[0] ? parseLsn(rows[0].lsn) : null;
}
