/**
 * The forward sync (source → target) of one run: setting it up before the copy (publication,
 * slot, exported snapshot), and streaming it after the copy, for `cloudshift run` and for a
 * cutover that catches up itself.
 */
import { randomBytes } from 'node:crypto';
import type { DocumentContainer } from '../target/blob/container.js';
import type pg from 'pg';
import type { Plan } from '../plan/defaults.js';
import { quoteIdent } from '../plan/names.js';
import type { Secrets } from '../plan/secrets.js';
import type { StateStore } from '../state/store.js';
import { forgetDocuments, recordDocuments } from '../state/sql/documents.js';
import {
  countDivergence,
  loHorizon,
  recordObject,
  saveLoHorizon,
  saveSyncStats,
  startSyncAt,
  syncRow,
  tolerateUntil,
} from '../state/sql/sync.js';
import { createContainerClient } from '../target/blob/client.js';
import type { TableTask } from '../engine/tableTask.js';
import type { SnapshotHolder } from '../engine/snapshot.js';
import { recopyKeyless, touchedSinceSnapshot } from '../engine/recopyKeyless.js';
import { formatLsn, type Lsn } from './lsn.js';
import { ensurePublication, slotGone, slotState, takeHorizon, type ObjectLedger, type ReplicationObject } from './objects.js';
import { stateProgress } from './progress.js';
import { createSlot, replicationConnection } from './replication.js';
import { syncLoop, type StopReason, type SyncLoopResult, type SyncStats } from './syncLoop.js';
import type { SyncDocumentStore } from './documents.js';

export function ledger(store: StateStore, runId: string): ObjectLedger {
  return { record: (obj, status) => recordObject(store.knex, runId, obj, status) };
}

export function forwardObjects(plan: Plan): { slot: ReplicationObject; publication: ReplicationObject } {
  return {
    slot: { side: 'source', kind: 'slot', name: plan.sync.slot, direction: 'forward' },
    publication: { side: 'source', kind: 'publication', name: plan.sync.publication, direction: 'forward' },
  };
}

/** Bounds the wait of CREATE_REPLICATION_SLOT for older transactions. */
const SLOT_CREATE_TIMEOUT_MS = 60_000;

/**
 * The snapshot the copy reads: the new slot's exported snapshot (its consistent point), or, when
 * the slot exists already (a resumed copy), a newer snapshot; changes older than that snapshot
 * may then find their rows already changed or gone, which apply tolerates up to its position.
 */
export async function prepareForwardSync(
  store: StateStore,
  runId: string,
  plan: Plan,
  source: pg.Client,
  sourceUrl: string,
  tables: readonly TableTask[],
): Promise<SnapshotHolder & { fresh: boolean }> {
  const objs = forwardObjects(plan);
  const book = ledger(store, runId);
  await ensurePublication(
    source,
    book,
    objs.publication,
    tables.map((t) => t.name),
  );
  await store.updateRun(runId, { publication_name: plan.sync.publication, slot_name: plan.sync.slot });
  const existing = await slotState(source, plan.sync.slot);
  // No slot, but batches copied (from its snapshot, or without one): a new slot would begin after
  // changes those batches never saw, which no stream would bring. Refused, as the sync refuses a
  // slot that went away. With none copied yet, a new slot and snapshot serve as well as the first.
  if (!existing.exists && (await store.hasCopiedBatches(runId))) {
    throw slotGone(plan.sync.slot, 'source');
  }
  if (!existing.exists) {
    const horizon = await takeHorizon(source);
    const created = await snapshotSlot(
      sourceUrl,
      plan.sync.slot,
      false,
      async (at) => {
        await book.record(objs.slot, 'created');
        await store.updateRun(runId, { consistent_lsn: formatLsn(at) });
        await startSyncAt(store.knex, runId, at);
        await saveLoHorizon(store.knex, runId, horizon);
        await store.appendEvent(runId, 'sync:slot', `replication slot ${plan.sync.slot} created at ${formatLsn(at)}`, {
          slot: plan.sync.slot,
          publication: plan.sync.publication,
          consistentPoint: formatLsn(at),
        });
      },
      () => book.record(objs.slot, 'creating'),
    );
    return { ...created, fresh: true };
  }
  await book.record(objs.slot, 'created');
  // A process killed as it created the slot, before recording its consistent point: the slot's
  // position is that point (nothing was applied from it yet).
  if ((await store.getRun(runId))?.consistent_lsn === null && existing.confirmedFlush !== null) {
    await store.updateRun(runId, { consistent_lsn: formatLsn(existing.confirmedFlush) });
  }
  if (!(await syncRow(store.knex, runId))) await startSyncAt(store.knex, runId, existing.confirmedFlush ?? 0n);
  // Unknown since when large objects may have changed: from the beginning (every one is checked).
  if ((await loHorizon(store.knex, runId)) === null) await saveLoHorizon(store.knex, runId, '3');
  // No batch of the old snapshot is marked from here on (a process that still holds it unknowingly).
  await store.updateRun(runId, { snapshot_name: null });
  // The newer snapshot comes from a temporary slot: its consistent point is exact (a transaction
  // that committed before it is in the snapshot, one after is not), which a keyless table needs.
  return {
    ...(await snapshotSlot(sourceUrl, `${plan.sync.slot.slice(0, 50)}_${randomBytes(4).toString('hex')}`, true, async (at) => {
      await tolerateUntil(store.knex, runId, at);
      const recopied = await recopyKeyless(store, runId, tables, touchedSinceSnapshot, null);
      await store.appendEvent(
        runId,
        'sync:resnapshot',
        `the slot's snapshot is gone (restart): the remaining batches are copied from a newer snapshot; changes before ${formatLsn(at)} may find their rows already changed${
          recopied.length ? `; tables without a key are copied again whole (${recopied.join(', ')})` : ''
        }`,
        { tolerateUntil: formatLsn(at), recopied },
      );
    })),
    fresh: false,
  };
}

/**
 * A logical slot created with an exported snapshot, held open (idle) for the copy: `created`
 * runs once the slot exists, with its consistent point, before the snapshot is handed out.
 */
async function snapshotSlot(
  sourceUrl: string,
  slot: string,
  temporary: boolean,
  created: (consistentPoint: Lsn) => Promise<void>,
  creating?: () => Promise<void>,
): Promise<SnapshotHolder> {
  const holder = await replicationConnection(sourceUrl, 'cloudshift snapshot');
  try {
    await creating?.();
    const slotMade = await createSlot(holder, slot, true, SLOT_CREATE_TIMEOUT_MS, temporary);
    await created(slotMade.consistentPoint);
    // Nothing else is sent on `holder` until it is released: that keeps the snapshot valid.
    return { name: slotMade.snapshotName!, release: () => holder.end().catch(() => undefined) };
  } catch (err) {
    await holder.end().catch(() => undefined);
    throw err;
  }
}

export interface ForwardSyncOptions {
  store: StateStore;
  runId: string;
  plan: Plan;
  secrets: Pick<Secrets, 'source' | 'target' | 'blobConnectionString' | 'blobSas'>;
  tasks: readonly TableTask[];
  workerId: string;
  untilLagMs?: number;
  untilFence?: Lsn | (() => Lsn | null);
  heartbeatMs?: number;
  abortSignal?: AbortSignal;
  shouldStop?: () => Promise<boolean>;
  onStats?: (s: SyncStats) => void;
  onWarning?: (message: string) => void;
  afterCommit?: (count: number) => Promise<void> | void;
  /** Creates on the target the partitions made on the source since (syncLoop's onMissingPartition). */
  onMissingPartition?: () => Promise<number>;
}

export async function runForwardSync(o: ForwardSyncOptions): Promise<SyncLoopResult> {
  const { store, runId, plan } = o;
  const row = await syncRow(store.knex, runId);
  let lastSaved = 0;
  const result = await syncLoop({
    fromUrl: o.secrets.source,
    fromSide: 'source',
    toUrl: o.secrets.target,
    slot: plan.sync.slot,
    publication: plan.sync.publication,
    tables: o.tasks,
    progress: stateProgress(store.schema, runId, row?.lsn ?? 0n),
    tolerateUntil: row?.tolerateUntil ?? null,
    documents: documentsTarget(store, runId, plan, o.secrets, o.tasks),
    ...(o.untilLagMs === undefined ? {} : { untilLagMs: o.untilLagMs }),
    ...(o.untilFence === undefined ? {} : { untilFence: o.untilFence }),
    heartbeatMs: o.heartbeatMs ?? 1000,
    warnRetainedWalBytes: plan.sync.warnRetainedWalBytes,
    ...(o.abortSignal ? { abortSignal: o.abortSignal } : {}),
    ...(o.shouldStop ? { shouldStop: o.shouldStop } : {}),
    ...(o.afterCommit ? { afterCommit: o.afterCommit } : {}),
    ...(o.onMissingPartition ? { onMissingPartition: o.onMissingPartition } : {}),
    onStats: async (s) => {
      o.onStats?.(s);
      if (Date.now() - lastSaved < 1000) return;
      lastSaved = Date.now();
      await saveSyncStats(store.knex, runId, { ...s, applier: o.workerId });
    },
    onDivergence: async (d) => {
      await countDivergence(store.knex, runId);
      await store.appendEvent(
        runId,
        'sync:divergence',
        `${d.table}: ${d.operation} at ${formatLsn(d.lsn)} matched no row on the target (${d.key}); the target differs from the source there`,
        { table: d.table, operation: d.operation, key: d.key, lsn: formatLsn(d.lsn) },
      );
      o.onWarning?.(`divergence: ${d.table} ${d.operation} matched no row (${d.key}); run \`cloudshift verify --repair\``);
    },
    onWarning: async (message) => {
      o.onWarning?.(message);
      await store.appendEvent(runId, 'sync:warning', message);
    },
    onReconnect: async (reason, attempt) => {
      o.onWarning?.(`sync connection lost (${reason}); reconnecting (attempt ${attempt})`);
      await store.appendEvent(runId, 'sync:reconnect', `sync connection lost: ${reason}; reconnecting`, { attempt });
    },
  });
  await saveSyncStats(store.knex, runId, { ...result.stats, applier: o.workerId });
  return result;
}

/** Where the forward stream's documents go: the plan's container, recorded in the state store. */
export function documentsTarget(
  store: StateStore,
  runId: string,
  plan: Plan,
  secrets: Pick<Secrets, 'blobConnectionString' | 'blobSas'>,
  tasks: readonly TableTask[],
): { container: DocumentContainer; store: SyncDocumentStore } | null {
  if (!plan.target.blob || !tasks.some((t) => t.documents)) return null;
  const db = store.pool;
  return {
    container: createContainerClient(plan.target.blob, { connectionString: secrets.blobConnectionString, sas: secrets.blobSas }),
    store: {
      record: (relation, doc) => recordDocuments(db, store.schema, runId, relation, [doc]),
      forget: (relation, key) => forgetDocuments(db, store.schema, runId, relation, [key]),
      released: { table: `${quoteIdent(store.schema)}.released_blobs`, runId },
    },
  };
}

export type { StopReason };
