/** Live sync, cutover and rollback in the state store (migration 20261123000003). */
import type { Knex } from 'knex';
import { redactDeep } from '../../redact.js';
import type { ReplicationObject } from '../../sync/objects.js';
import { formatLsn, parseLsn, type Lsn } from '../../sync/lsn.js';

export interface RecordedObject extends ReplicationObject {
  status: 'creating' | 'created' | 'dropped';
  created_at: Date;
}

export async function recordObject(knex: Knex, runId: string, obj: ReplicationObject, status: RecordedObject['status']): Promise<void> {
  await knex('replication_objects')
    .insert({ run_id: runId, ...obj, status, dropped_at: status === 'dropped' ? knex.fn.now() : null })
    .onConflict(['run_id', 'side', 'kind', 'name'])
    .merge({ status, direction: obj.direction, dropped_at: status === 'dropped' ? knex.fn.now() : null });
}

/** Objects recorded and not known to be dropped, newest first. */
export async function liveObjects(knex: Knex, runId: string | null): Promise<Array<RecordedObject & { run_id: string }>> {
  const q = knex('replication_objects').whereNot({ status: 'dropped' }).orderBy('id', 'desc');
  if (runId) void q.where({ run_id: runId });
  return q.select('run_id', 'side', 'kind', 'name', 'direction', 'status', 'created_at');
}

/** The run's forward slot on the source is recorded as dropped (by cleanup or a rollback). */
export async function forwardSlotDropped(knex: Knex, runId: string): Promise<boolean> {
  const row = await knex('replication_objects')
    .where({ run_id: runId, side: 'source', kind: 'slot', direction: 'forward', status: 'dropped' })
    .first('id');
  return row !== undefined;
}

export interface SyncRow {
  lsn: Lsn;
  sourceCommitAt: Date | null;
  appliedAt: Date;
  tolerateUntil: Lsn | null;
  lagBytes: number | null;
  lagMs: number | null;
  retainedWalBytes: number | null;
  measuredAt: Date | null;
  /** Seconds since that measurement, by the state store's clock (the one that wrote it). */
  measuredSecondsAgo: number | null;
  divergences: number;
}

export async function syncRow(knex: Knex, runId: string): Promise<SyncRow | null> {
  const r = await knex('applied_lsn').where({ run_id: runId }).first<
    | {
        lsn: string;
        source_commit_at: Date | null;
        applied_at: Date;
        tolerate_until: string | null;
        lag_bytes: string | null;
        lag_ms: number | null;
        retained_wal_bytes: string | null;
        measured_at: Date | null;
        measured_ago: number | null;
        divergences: number;
      }
    | undefined
  >(knex.raw('lsn::text AS lsn'), 'source_commit_at', 'applied_at', knex.raw('tolerate_until::text AS tolerate_until'), 'lag_bytes', 'lag_ms', 'retained_wal_bytes', 'measured_at', knex.raw('extract(epoch FROM clock_timestamp() - measured_at)::float8 AS measured_ago'), 'divergences');
  if (!r) return null;
  return {
    lsn: parseLsn(r.lsn),
    sourceCommitAt: r.source_commit_at,
    appliedAt: r.applied_at,
    tolerateUntil: r.tolerate_until ? parseLsn(r.tolerate_until) : null,
    lagBytes: r.lag_bytes === null ? null : Number(r.lag_bytes),
    lagMs: r.lag_ms,
    retainedWalBytes: r.retained_wal_bytes === null ? null : Number(r.retained_wal_bytes),
    measuredAt: r.measured_at,
    measuredSecondsAgo: r.measured_ago,
    divergences: r.divergences,
  };
}

/** The slot's consistent point becomes the applied position: the stream starts there. */
export async function startSyncAt(knex: Knex, runId: string, lsn: Lsn): Promise<void> {
  await knex('applied_lsn')
    .insert({ run_id: runId, lsn: formatLsn(lsn) })
    .onConflict('run_id')
    .merge({ lsn: formatLsn(lsn), applied_at: knex.fn.now() });
}

/** Rows copied from a snapshot newer than the slot's: changes before `lsn` may find them gone. */
export async function tolerateUntil(knex: Knex, runId: string, lsn: Lsn): Promise<void> {
  await knex('applied_lsn')
    .where({ run_id: runId })
    .update({ tolerate_until: knex.raw('GREATEST(tolerate_until, ?::pg_lsn)', [formatLsn(lsn)]) });
}

export async function saveSyncStats(
  knex: Knex,
  runId: string,
  s: { lagBytes: number | null; lagMs: number | null; retainedWalBytes: number | null; applier: string },
): Promise<void> {
  await knex('applied_lsn').where({ run_id: runId }).update({
    lag_bytes: s.lagBytes,
    lag_ms: s.lagMs,
    retained_wal_bytes: s.retainedWalBytes,
    applier: s.applier,
    measured_at: knex.fn.now(),
  });
  // The lag over time, for the report: one sample every LAG_SAMPLE_SECONDS at most.
  if (s.lagMs !== null)
    await knex.raw(
      `INSERT INTO lag_samples (run_id, lag_ms, lag_bytes) SELECT :runId, :lagMs, :lagBytes
        WHERE NOT EXISTS (SELECT 1 FROM lag_samples WHERE run_id = :runId AND at > now() - make_interval(secs => :every))`,
      { runId, lagMs: s.lagMs, lagBytes: s.lagBytes, every: LAG_SAMPLE_SECONDS },
    );
}

/** The lag is sampled for the report at most this often (applied_lsn keeps the latest every second). */
export const LAG_SAMPLE_SECONDS = 5;

/** The run's lag samples per time bucket (the highest in each), the bucket width chosen from their span; at most a few hundred rows. */
export async function lagBuckets(
  knex: Knex,
  runId: string,
  bucketFor: (spanMs: number) => number,
): Promise<{ first: Date | null; bucketMs: number; buckets: Array<{ bucket: number; lagMs: number }> }> {
  const span = await knex('lag_samples')
    .where({ run_id: runId })
    .first<{ first: Date | null; last: Date | null } | undefined>(knex.raw('min(at) AS first'), knex.raw('max(at) AS last'));
  if (!span?.first || !span.last) return { first: null, bucketMs: bucketFor(0), buckets: [] };
  const bucketMs = bucketFor(span.last.getTime() - span.first.getTime());
  const { rows } = await knex.raw<{ rows: Array<{ bucket: number; lag_ms: string }> }>(
    `SELECT floor(extract(epoch FROM at - :first::timestamptz) * 1000 / :bucketMs)::int AS bucket, max(lag_ms)::text AS lag_ms
       FROM lag_samples WHERE run_id = :runId GROUP BY 1 ORDER BY 1`,
    { runId, first: span.first, bucketMs },
  );
  return { first: span.first, bucketMs, buckets: rows.map((r) => ({ bucket: r.bucket, lagMs: Number(r.lag_ms) })) };
}

/** Oldest transaction whose large-object writes may still be missing on the target (xid8 text). */
export async function loHorizon(knex: Knex, runId: string): Promise<string | null> {
  const r = await knex('applied_lsn').where({ run_id: runId }).first<{ lo_horizon: string | null } | undefined>('lo_horizon');
  return r?.lo_horizon ?? null;
}

export async function saveLoHorizon(knex: Knex, runId: string, xid: string): Promise<void> {
  await knex('applied_lsn').where({ run_id: runId }).update({ lo_horizon: xid });
}

/** The forward stream starts again at `lsn` (a new slot, after a rollback): nothing is tolerated. */
export async function restartSyncAt(knex: Knex, runId: string, lsn: Lsn): Promise<void> {
  await knex('applied_lsn')
    .insert({ run_id: runId, lsn: formatLsn(lsn) })
    .onConflict('run_id')
    .merge({ lsn: formatLsn(lsn), tolerate_until: null, applied_at: knex.fn.now(), lag_ms: null, lag_bytes: null, measured_at: null });
}

/** A full verification found every table equal: the divergences counted so far are settled. */
/** Settles `count` of the run's divergences (those a verification found mended since). */
export async function settleDivergences(knex: Knex, runId: string, count: number): Promise<void> {
  await knex('applied_lsn')
    .where({ run_id: runId })
    .update({ divergences: knex.raw('GREATEST(divergences - ?, 0)', [count]) });
}

export async function countDivergence(knex: Knex, runId: string): Promise<void> {
  await knex('applied_lsn').where({ run_id: runId }).increment('divergences', 1);
}

export type SwitchKind = 'cutover' | 'rollback';
export type SwitchState = 'started' | 'paused' | 'fenced' | 'switched' | 'done' | 'aborted';

export interface SwitchRow {
  id: string;
  run_id: string;
  kind: SwitchKind;
  state: SwitchState;
  by: string;
  fence_lsn: string | null;
  pause_ms: number | null;
  started_at: Date;
  finished_at: Date | null;
  details: Record<string, unknown>;
}

/** A switch begins: recorded with its details (its sides) in one statement, so none is ever without them. */
export async function startSwitch(
  knex: Knex,
  runId: string,
  kind: SwitchKind,
  by: string,
  details: Record<string, unknown>,
): Promise<SwitchRow> {
  const [row] = await knex<SwitchRow>('switches')
    .insert({
      run_id: runId,
      kind,
      state: 'started',
      by,
      details: JSON.stringify(redactDeep(details)) as unknown as Record<string, unknown>,
    })
    .returning('*');
  return row!;
}

export async function updateSwitch(
  knex: Knex,
  id: string,
  fields: Partial<{ state: SwitchState; fence_lsn: string; pause_ms: number; details: Record<string, unknown> }>,
): Promise<void> {
  const done = fields.state === 'done' || fields.state === 'aborted';
  await knex('switches')
    .where({ id })
    .update({
      ...fields,
      ...(fields.details ? { details: JSON.stringify(redactDeep(fields.details)) } : {}),
      ...(done ? { finished_at: knex.fn.now() } : {}),
    });
}

export async function latestSwitch(knex: Knex, runId: string): Promise<SwitchRow | null> {
  const row = await knex<SwitchRow>('switches').where({ run_id: runId }).orderBy('id', 'desc').first();
  return row ?? null;
}

export async function listSwitches(knex: Knex, runId: string): Promise<SwitchRow[]> {
  return knex<SwitchRow>('switches').where({ run_id: runId }).orderBy('id');
}
