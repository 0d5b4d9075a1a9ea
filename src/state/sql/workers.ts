/**
 * Workers sharing a run. A worker is alive while it holds its session advisory lock
 * (`cloudshift.worker:<id>`, released by PostgreSQL the moment its process or machine loses the
 * connection) and its heartbeat is recent (a hung process or a half-open connection). Claims of
 * workers that are not alive go back to pending for the others.
 */
import type { Knex } from 'knex';
import type { Who } from '../who.js';

export const workerLock = (id: string): string => `cloudshift.worker:${id}`;

/**
 * This process's worker id, its lock taken (held by the store's session): host:pid, or host:pid/2,
 * /3… while a live process holds that one (two containers given one hostname, each its pid 1,
 * would otherwise share an id, and each release the other's claims as its own).
 */
export async function takeWorkerId(store: { tryLock(name: string): Promise<boolean> }, base: string): Promise<string> {
  for (let n = 1; n <= 1000; n += 1) {
    const id = n === 1 ? base : `${base}/${n}`;
    if (await store.tryLock(workerLock(id))) return id;
  }
  throw new Error(`worker ids ${base} to ${base}/1000 are all held by live processes`);
}

export interface WorkerRow {
  id: string;
  host: string;
  pid: number;
  started_at: Date;
  last_seen: Date;
  doing: string | null;
  alive: boolean;
  leader: boolean;
}

/** Records the worker (its lock is taken by the caller's session) and forgets claims a previous process with the same id left. */
export async function registerWorker(knex: Knex, runId: string, id: string, who: Who): Promise<void> {
  await knex('workers')
    .insert({ id, run_id: runId, host: who.host, pid: who.pid, doing: 'starting' })
    .onConflict('id')
    .merge({ run_id: runId, host: who.host, pid: who.pid, started_at: knex.fn.now(), last_seen: knex.fn.now(), doing: 'starting' });
  await releaseClaimsOf(knex, runId, id);
}

/** A worker's own claims back to pending (a batch it could not copy, a previous process with its id). */
export async function releaseClaimsOf(knex: Knex, runId: string, id: string): Promise<void> {
  await knex('batches')
    .where({ run_id: runId, status: 'claimed', claimed_by: id })
    .update({ status: 'pending', claimed_by: null, claimed_at: null });
}

export async function heartbeat(knex: Knex, id: string, doing: string): Promise<void> {
  await knex('workers').where({ id }).update({ last_seen: knex.fn.now(), doing });
}

/** Advisory locks belong to a database: only this one's count. */
const THIS_DB = `(SELECT oid FROM pg_database WHERE datname = current_database())`;

/** The sessions (pid) holding the advisory lock of this name (an SQL expression) in this database. */
export const advisoryHolders = (lockName: string) =>
  `SELECT l.pid FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted AND l.database = ${THIS_DB}
             AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtextextended(${lockName}, 0)`;

const held = (lockName: string) => `EXISTS (${advisoryHolders(lockName)})`;

/** The run's workers, alive or not, the leader (holder of the run's lock) marked. */
export async function listWorkers(knex: Knex, runId: string, staleMs: number): Promise<WorkerRow[]> {
  const { rows } = await knex.raw<{ rows: WorkerRow[] }>(
    `SELECT w.id, w.host, w.pid, w.started_at, w.last_seen, w.doing,
            (${held(`'cloudshift.worker:' || w.id`)} AND w.last_seen > now() - make_interval(secs => :stale / 1000.0)) AS alive,
            EXISTS (SELECT 1 FROM pg_locks a JOIN pg_locks r ON r.pid = a.pid
                     WHERE a.locktype = 'advisory' AND a.granted AND r.locktype = 'advisory' AND r.granted
                       AND a.database = ${THIS_DB} AND r.database = ${THIS_DB}
                       AND ((a.classid::bigint << 32) | a.objid::bigint) = hashtextextended('cloudshift.worker:' || w.id, 0)
                       AND ((r.classid::bigint << 32) | r.objid::bigint) = hashtextextended('cloudshift.run:' || w.run_id::text, 0)) AS leader
       FROM workers w WHERE w.run_id = :runId ORDER BY w.started_at`,
    { runId, stale: staleMs },
  );
  return rows;
}

/** Claims of workers that are not alive go back to pending; returns how many. */
export async function releaseDeadClaims(knex: Knex, runId: string, staleMs: number): Promise<number> {
  const { rowCount } = await knex.raw<{ rowCount: number }>(
    `UPDATE batches b SET status = 'pending', claimed_by = NULL, claimed_at = NULL
      WHERE b.run_id = :runId AND b.status = 'claimed'
        AND NOT EXISTS (SELECT 1 FROM workers w
                         WHERE w.id = b.claimed_by AND w.run_id = b.run_id
                           AND ${held(`'cloudshift.worker:' || w.id`)}
                           AND w.last_seen > now() - make_interval(secs => :stale / 1000.0))`,
    { runId, stale: staleMs },
  );
  return rowCount ?? 0;
}

/** Batches still to copy, being copied, or copied and not yet verified. */
export async function openBatches(knex: Knex, runId: string): Promise<{ pending: number; claimed: number; copied: number }> {
  const r = await knex('batches')
    .where({ run_id: runId })
    .whereIn('status', ['pending', 'claimed', 'copied'])
    .select(
      knex.raw(`count(*) FILTER (WHERE status = 'pending')::int AS pending`),
      knex.raw(`count(*) FILTER (WHERE status = 'claimed')::int AS claimed`),
      knex.raw(`count(*) FILTER (WHERE status = 'copied')::int AS copied`),
    )
    .first<{ pending: number; claimed: number; copied: number }>();
  return r ?? { pending: 0, claimed: 0, copied: 0 };
}
