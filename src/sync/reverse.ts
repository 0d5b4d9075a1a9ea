/**
 * The reverse sync (target → source): prepared inside the cutover pause so that every write the
 * application makes on the target afterwards is in its slot, and drained by a rollback. Its
 * applied position is a replication origin on the source, advanced in each apply transaction.
 */
import type pg from 'pg';
import type { Plan } from '../plan/defaults.js';
import type { Secrets } from '../plan/secrets.js';
import type { TableTask } from '../engine/tableTask.js';
import { createContainerClient } from '../target/blob/client.js';
import { parseLsn, type Lsn } from './lsn.js';
import type { ObjectLedger, ReplicationObject } from './objects.js';
import { originProgress } from './progress.js';
import { syncLoop, type SyncLoopResult, type SyncStats } from './syncLoop.js';

export function reverseObjects(plan: Plan): { slot: ReplicationObject; publication: ReplicationObject; origin: ReplicationObject } {
  const base = `${plan.sync.slot}_reverse`.slice(0, 63);
  return {
    slot: { side: 'target', kind: 'slot', name: base, direction: 'reverse' },
    publication: { side: 'target', kind: 'publication', name: `${plan.sync.publication}_reverse`.slice(0, 63), direction: 'reverse' },
    origin: { side: 'source', kind: 'origin', name: base, direction: 'reverse' },
  };
}

/**
 * A logical slot made with the SQL function: no snapshot is needed (the sides are equal at this
 * moment, inside the pause); its consistent point is where the stream starts. Made inside the
 * pause, so bounded by `timeoutMs`: the server waits for every transaction open on it (in any
 * database, a forgotten prepared transaction too) before the slot exists. A slot of this name left
 * by a switch that was killed is dropped first (nothing reads it; it would refuse the name).
 */
export async function createPlainSlot(client: pg.Client, ledger: ObjectLedger, obj: ReplicationObject, timeoutMs: number): Promise<Lsn> {
  await client.query(`SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active`, [
    obj.name,
  ]);
  await ledger.record(obj, 'creating');
  await client.query(`SET statement_timeout = ${Math.max(1, Math.floor(timeoutMs))}`);
  try {
    const { rows } = await client.query<{ lsn: string }>(
      `SELECT lsn::text AS lsn FROM pg_create_logical_replication_slot($1, 'pgoutput')`,
      [obj.name],
    );
    await ledger.record(obj, 'created');
    return parseLsn(rows[0]!.lsn);
  } catch (err) {
    if ((err as { code?: string }).code !== '57014') throw err;
    throw new SlotWaitError(
      `making replication slot "${obj.name}" waited more than ${Math.floor(timeoutMs)} ms for transactions open on the ${obj.side} server (a long one, or a prepared one: pg_prepared_xacts)`,
    );
  } finally {
    await client.query('RESET statement_timeout').catch(() => undefined);
  }
}

/** The opposite stream's slot could not be made within the pause. */
export class SlotWaitError extends Error {}

/** The origin's position on the source (what the reverse stream applied), or null. */
export async function originPosition(source: pg.Client, origin: string): Promise<Lsn | null> {
  const { rows } = await source.query<{ lsn: string | null }>(
    `SELECT pg_replication_origin_progress($1, true)::text AS lsn FROM pg_replication_origin WHERE roname = $1`,
    [origin],
  );
  return rows[0]?.lsn ? parseLsn(rows[0].lsn) : null;
}

export interface ReverseSyncOptions {
  plan: Plan;
  secrets: Pick<Secrets, 'source' | 'target' | 'blobConnectionString' | 'blobSas'>;
  tasks: readonly TableTask[];
  /** The reverse slot's consistent point (recorded by the cutover). */
  from: Lsn;
  untilLagMs?: number;
  untilFence?: Lsn | (() => Lsn | null);
  heartbeatMs?: number;
  abortSignal?: AbortSignal;
  onStats?: (s: SyncStats) => void;
  onWarning?: (message: string) => void;
  onDivergence: (d: { table: string; operation: string; key: string; lsn: Lsn }) => Promise<void>;
}

export async function runReverseSync(o: ReverseSyncOptions): Promise<SyncLoopResult> {
  const objs = reverseObjects(o.plan);
  const blob = o.plan.target.blob;
  const container =
    blob && o.tasks.some((t) => t.documents)
      ? createContainerClient(blob, { connectionString: o.secrets.blobConnectionString, sas: o.secrets.blobSas })
      : null;
  return syncLoop({
    fromUrl: o.secrets.target,
    fromSide: 'target',
    toUrl: o.secrets.source,
    slot: objs.slot.name,
    publication: objs.publication.name,
    tables: o.tasks,
    progress: originProgress(objs.origin.name, o.from),
    tolerateUntil: null,
    documents: null,
    reverse: {
      readBlob: async (name) => {
        if (!container) throw new Error(`reverse sync: ${name} names a blob, but the plan has no target.blob`);
        return container.getBlobClient(name).downloadToBuffer();
      },
      blobDigest: async (name) => {
        if (!container) return null;
        try {
          const p = await container.getBlobClient(name).getProperties();
          return p.contentMD5 ? { md5: Buffer.from(p.contentMD5).toString('hex'), size: p.contentLength ?? 0 } : null;
        } catch (err) {
          if ((err as { statusCode?: number }).statusCode === 404) return null;
          throw err;
        }
      },
    },
    ...(o.untilLagMs === undefined ? {} : { untilLagMs: o.untilLagMs }),
    ...(o.untilFence === undefined ? {} : { untilFence: o.untilFence }),
    heartbeatMs: o.heartbeatMs ?? 1000,
    warnRetainedWalBytes: o.plan.sync.warnRetainedWalBytes,
    ...(o.abortSignal ? { abortSignal: o.abortSignal } : {}),
    ...(o.onStats ? { onStats: o.onStats } : {}),
    onDivergence: o.onDivergence,
    ...(o.onWarning ? { onWarning: o.onWarning } : {}),
  });
}
