/**
 * The copy phase: batches are claimed from the state store (FOR UPDATE SKIP LOCKED) in order,
 * largest tables first, and copied `jobs` at a time (p-queue), each worker slot keeping its own
 * source and target connections. Each batch is verified after its commit; a mismatch is retried
 * once, then recorded. Transient failures (by SQLSTATE/errno) are retried with backoff, then the
 * phase stops with a resumable error. On abort, no new batch is claimed and the ones in flight
 * finish: the stop is at a safe point.
 */
import PQueue from 'p-queue';
import type pg from 'pg';
import { ConnectError, messageOf } from '../errors.js';
import { connect } from '../pg/connect.js';
import { isTransient, withRetry } from '../pg/transient.js';
import { redact } from '../redact.js';
import {
  markBatchCopied,
  markBatchMismatch,
  markBatchRetry,
  markBatchVerified,
  markRowsVerified,
  returnForDocuments,
  returnBatchesHoldingWrong,
  settleDocumentBatches,
} from '../state/sql/batchStatus.js';
import type { StateStore } from '../state/store.js';
import type { BatchRow } from '../state/types.js';
import { addDigests, digestEquals, digestText, EMPTY_DIGEST, parseDigest, type Digest } from '../verify/rowDigest.js';
import { ClaimLostError, copyBatch, digestRange } from './copyBatch.js';
import type { Emit } from './events.js';
import type { EngineHooks } from './hooks.js';
import type { TableTask } from './tableTask.js';
import type { BlobPlan } from '../plan/defaults.js';
import { ClientPool } from '../pg/clientPool.js';
import { createContainerClient, type BlobCredentials } from '../target/blob/client.js';
import { DEFAULT_BLOCK_SIZE, DEFAULT_BLOCKS } from '../target/blob/upload.js';
import { forgetRecord, recordDocuments, forgetOtherDocuments, recordedDocuments } from '../state/sql/documents.js';
import { sweepDocuments, type WrongDocument } from '../verify/documentSweep.js';
import { BlockBuffers } from './blockBuffers.js';
import { copyDocumentsBatch, type DocumentsContext } from './copyDocuments.js';
import { beginInSnapshot } from './snapshot.js';
import { blobError } from '../target/blob/errors.js';
import { RestError } from '@azure/storage-blob';

export interface CopyPhaseOptions {
  runId: string;
  store: StateStore;
  tasks: Map<string, TableTask>;
  sourceUrl: string;
  targetUrl: string;
  snapshot: string | null;
  stateInTarget: boolean;
  jobs: number;
  workerId: string;
  /** The plan this process copies by: it claims nothing while the run's is another. */
  fingerprint: string;
  hooks: EngineHooks;
  emit: Emit;
  abortSignal: AbortSignal | undefined;
  /** Where documents go; null when the plan has none. */
  blob: { plan: BlobPlan; credentials: BlobCredentials } | null;
  blobConcurrency: number;
  blobRetries?: number;
  blobTryTimeoutMs?: number;
  /**
   * Verify batches an earlier process committed but did not verify (the leader, which held the
   * run's lock after that process). Workers leave them to the leader.
   */
  verifyLeftovers?: boolean;
  /** Retries of a transient failure per batch before the run stops. */
  transientAttempts?: number;
  retryBaseDelayMs?: number;
  sampleEvery?: number;
}

export interface CopyPhaseResult {
  mismatches: number;
  stoppedEarly: boolean;
}

/**
 * The copy already runs `jobs` sessions at once: parallel query inside each batch only makes
 * them compete for the same cores (measured: the benchmark's ratio rises with it off).
 */
const COPY_SESSION = [['max_parallel_workers_per_gather', '0']] as const;

interface Slot {
  source: pg.Client | null;
  target: pg.Client | null;
  /** A second source session, opened for the first bytea documents batch (their stream). */
  content: pg.Client | null;
}

export async function copyPhase(o: CopyPhaseOptions): Promise<CopyPhaseResult> {
  const schema = o.store.schema;
  const slots: Slot[] = Array.from({ length: o.jobs }, () => ({ source: null, target: null, content: null }));
  const free = [...slots];
  const queue = new PQueue({ concurrency: o.jobs });
  let mismatches = 0;
  let failure: unknown = null;
  const progress = await tableProgress(o);
  const documents = await openDocuments(o);
  const finished = (table: string, rows: number, bytes: number, mismatched: boolean) => {
    const p = progress.get(table);
    if (!p) return;
    p.remaining -= 1;
    p.rows += rows;
    p.bytes += bytes;
    if (mismatched) p.mismatches += 1;
    if (p.remaining === 0) o.emit('table:done', { table, rows: p.rows, bytes: p.bytes, mismatches: p.mismatches });
  };

  const ensure = async (slot: Slot) => {
    slot.source ??= await connect({
      role: 'source',
      connectionString: o.sourceUrl,
      applicationName: 'cloudshift copy',
      settings: COPY_SESSION,
    });
    if (!slot.target) {
      slot.target = await connect({
        role: 'target',
        connectionString: o.targetUrl,
        applicationName: 'cloudshift copy',
        settings: COPY_SESSION,
      });
      // The rows as they are on the source: a target table made by an earlier run (existingData:
      // truncate) has its triggers already, which must not fire for copied rows (an audit
      // trigger would add rows, an updated_at trigger change them). As the applier does; a role
      // that may not set it (not a superuser, no SET grant) copies with the triggers on.
      await slot.target.query('SET session_replication_role = replica').catch(() => undefined);
    }
    return { source: slot.source, target: slot.target };
  };
  const reset = async (slot: Slot) => {
    await Promise.allSettled([slot.source?.end(), slot.target?.end(), slot.content?.end()]);
    slot.source = null;
    slot.target = null;
    slot.content = null;
  };
  const contentSession = async (slot: Slot) =>
    (slot.content ??= await connect({
      role: 'source',
      connectionString: o.sourceUrl,
      applicationName: 'cloudshift documents',
      settings: COPY_SESSION,
    }));

  /** Runs `fn` on the slot's connections, reconnecting and retrying transient failures. */
  const retrying = <T>(
    slot: Slot,
    task: TableTask,
    batch: BatchRow,
    fn: (conns: { source: pg.Client; target: pg.Client }, attempt: number) => Promise<T>,
  ) =>
    withRetry(
      async (attempt) => {
        if (attempt > 1) await reset(slot);
        return fn(await ensure(slot), attempt);
      },
      {
        attempts: o.transientAttempts ?? 5,
        baseDelayMs: o.retryBaseDelayMs ?? 500,
        ...(o.abortSignal ? { abortSignal: o.abortSignal } : {}),
        onRetry: (attempt, err, delay) =>
          o.emit('batch:retry', {
            table: task.display,
            batchId: batch.id,
            seq: batch.seq,
            attempt,
            reason: `${redact(messageOf(err))}; attempt ${attempt + 1} of ${o.transientAttempts ?? 5} in ${delay} ms`,
          }),
      },
    );

  /**
   * A batch that failed here after another worker took it over (this one was slow, and a worker
   * timeout passed): what failed is likely the other's work in the way (its rows committed: a
   * duplicate key), and the batch is the other's to finish. A ClaimLostError, not the run's failure.
   */
  const claimLostOr = async (err: unknown, batch: BatchRow, table: string): Promise<unknown> => {
    if (err instanceof ClaimLostError || (err as { name?: unknown }).name === 'AbortError') return err;
    const row = await o.store
      .knex('batches')
      .where({ id: batch.id })
      .first<{ claimed_by: string | null } | undefined>('claimed_by')
      .catch(() => undefined);
    // Still this worker's (claimed, or copied: the failure came after its commit): its own failure.
    if (!row || row.claimed_by === o.workerId) return err;
    return new ClaimLostError(
      `batch ${batch.id} of ${table} was taken over by another worker while this one copied it (${redact(messageOf(err))})`,
    );
  };

  /**
   * Copies (unless `copiedBefore`: committed by an earlier process, not yet verified) and
   * verifies one batch.
   */
  const process = async (slot: Slot, first: BatchRow, copiedBefore?: { digest: Digest; bytes: number }) => {
    const task = o.tasks.get(first.relation);
    if (!task) throw new Error(`batch ${first.id} names ${first.relation}, which is not in the plan`);
    let batch = first;
    // A batch claimed before (by a process that died, or retried here) may have rows on the target.
    let retry = batch.attempts > 1;
    let pendingCopy = copiedBefore ? { ...copiedBefore, marked: true } : null;
    for (let verifyAttempt = 1; ; verifyAttempt += 1) {
      const started = Date.now();
      const earlier = pendingCopy;
      pendingCopy = null;
      const copied =
        earlier ??
        (await retrying(slot, task, batch, async (conns, attempt) => {
          const ctx = {
            ...conns,
            snapshot: o.snapshot,
            stateSchemaInTarget: o.stateInTarget ? schema : null,
            workerId: o.workerId,
            hooks: o.hooks,
          };
          if (!task.documents || !documents) return copyBatch(ctx, task, batch, retry || attempt > 1);
          const session = task.documents.contentKind === 'bytea' ? await contentSession(slot) : null;
          return copyDocumentsBatch(ctx, documents, task, batch, retry || attempt > 1, session);
        }).catch(async (err: unknown) => {
          throw await claimLostOr(err, batch, task.display);
        }));
      if (!copied.marked) {
        await markBatchCopied(o.store.pool, schema, {
          id: batch.id,
          workerId: o.workerId,
          rows: copied.digest.rows,
          bytes: copied.bytes,
          sourceChecksum: digestText(copied.digest),
          snapshot: o.snapshot,
        });
      }
      o.emit('batch:copied', {
        table: task.display,
        batchId: batch.id,
        seq: batch.seq,
        rows: copied.digest.rows,
        bytes: copied.bytes,
        ms: Date.now() - started,
      });
      if (!task.shape.keyColumns) {
        finished(task.display, copied.digest.rows, copied.bytes, false); // verified whole, after its last batch
        return;
      }
      const actual = await retrying(slot, task, batch, ({ target }) => digestRange(target, task, batch, undefined, true));
      const judged = () => ({ id: batch.id, sourceChecksum: digestText(copied.digest), targetChecksum: digestText(actual) });
      if (digestEquals(actual, copied.digest) && task.documents && documents) {
        // Its documents are verified by the sweep after the batches (sweepDocuments).
        await markRowsVerified(o.store.pool, schema, judged());
        finished(task.display, copied.digest.rows, copied.bytes, false);
        return;
      }
      if (digestEquals(actual, copied.digest)) {
        await markBatchVerified(o.store.pool, schema, judged());
        o.emit('batch:verified', { table: task.display, batchId: batch.id, seq: batch.seq });
        finished(task.display, copied.digest.rows, copied.bytes, false);
        return;
      }
      const reason = `checksum mismatch: source ${digestText(copied.digest)}, target ${digestText(actual)}`;
      if (verifyAttempt >= 2) {
        // Settled meanwhile by another process: its verdict stands.
        if (!(await markBatchMismatch(o.store.pool, schema, judged(), reason)))
          return finished(task.display, copied.digest.rows, copied.bytes, false);
        mismatches += 1;
        o.emit('batch:mismatch', {
          table: task.display,
          batchId: batch.id,
          seq: batch.seq,
          source: digestText(copied.digest),
          target: digestText(actual),
        });
        await o.store.appendEvent(o.runId, 'batch:mismatch', `${task.display} batch ${batch.seq}: ${reason}`, { batchId: batch.id });
        finished(task.display, copied.digest.rows, copied.bytes, true);
        return;
      }
      o.emit('batch:retry', { table: task.display, batchId: batch.id, seq: batch.seq, attempt: verifyAttempt, reason });
      if (!(await markBatchRetry(o.store.pool, schema, batch.id, o.workerId, reason)))
        return finished(task.display, copied.digest.rows, copied.bytes, false);
      batch = { ...batch, status: 'claimed', attempts: batch.attempts + 1 };
      retry = true;
    }
  };

  const dispatch = async (slot: Slot, run: () => Promise<void>) => {
    void queue.add(async () => {
      try {
        await run();
      } catch (err) {
        await reset(slot);
        if (err instanceof ClaimLostError) o.emit('warning', { message: `${err.message}: it is copied again there` });
        // Ctrl-C cut the batch's uploads short: its transaction rolled back and the documents it
        // uploaded are recorded, so the next run copies it again, skipping them. A stop, not a failure.
        else if (!(o.abortSignal?.aborted && (err as { name?: unknown }).name === 'AbortError')) failure ??= err;
      } finally {
        free.push(slot);
      }
    });
  };
  const waitForSlot = async () => {
    while (free.length === 0) await new Promise<void>((resolve) => queue.once('next', () => resolve()));
  };

  try {
    // Batches an earlier process committed but did not get to verify (it held the run's lock, so
    // no one else is working on them now).
    const unverified = (o.verifyLeftovers === false ? [] : await o.store.listBatches(o.runId)).filter(
      (b) => b.status === 'copied' && o.tasks.get(b.relation)?.shape.keyColumns && !rowsVerified(o, b),
    );
    for (const b of unverified) {
      await waitForSlot();
      if (o.abortSignal?.aborted || failure !== null) break;
      const slot = free.pop()!;
      await dispatch(slot, () =>
        process(slot, { ...b, status: 'claimed' }, { digest: parseDigest(b.source_checksum), bytes: Number(b.bytes ?? 0) }),
      );
    }
    while (!o.abortSignal?.aborted && failure === null) {
      await waitForSlot();
      if (o.abortSignal?.aborted || failure !== null) break;
      const [batch] = await o.store.claimBatches(o.runId, o.workerId, 1, o.fingerprint);
      if (!batch) break;
      const slot = free.pop()!;
      await dispatch(slot, () => process(slot, batch));
    }
    await queue.onIdle();
    if (failure === null && !o.abortSignal?.aborted) mismatches += await verifyKeylessTables(o, slots[0]!, ensure);
    if (failure === null && !o.abortSignal?.aborted && documents) mismatches += await verifyDocuments(o, documents);
    if (failure === null && !o.abortSignal?.aborted) await o.hooks.afterCopyPass?.();
  } finally {
    await Promise.all(slots.map(reset));
    await documents?.content.end();
  }
  if (failure !== null) {
    if (failure instanceof RestError) throw blobError(failure);
    if (isTransient(failure)) {
      throw new ConnectError(`the copy stopped after repeated connection failures: ${redact(messageOf(failure))}`, {
        cause: failure,
        hint: 'every batch copied so far is kept; fix the connection and run the same command again to resume',
      });
    }
    throw failure;
  }
  return { mismatches, stoppedEarly: o.abortSignal?.aborted === true };
}

interface Progress {
  remaining: number;
  rows: number;
  bytes: number;
  mismatches: number;
}

/** Announces each table's batches (and what earlier attempts did) and tracks what remains. */
async function tableProgress(o: CopyPhaseOptions): Promise<Map<string, Progress>> {
  const out = new Map<string, Progress & { batches: number }>();
  for (const b of await o.store.listBatches(o.runId)) {
    const p = out.get(b.relation) ?? { batches: 0, remaining: 0, rows: 0, bytes: 0, mismatches: 0 };
    p.batches += 1;
    const awaitsVerification = b.status === 'copied' && o.tasks.get(b.relation)?.shape.keyColumns && !rowsVerified(o, b);
    if (b.status === 'pending' || b.status === 'claimed' || awaitsVerification) p.remaining += 1;
    else {
      p.rows += Number(b.rows ?? 0);
      p.bytes += Number(b.bytes ?? 0);
      if (b.status === 'mismatch') p.mismatches += 1;
    }
    out.set(b.relation, p);
  }
  for (const [table, p] of out) {
    const task = o.tasks.get(table);
    o.emit('table:planned', {
      table,
      batches: p.batches,
      done: p.batches - p.remaining,
      estimatedRows: task?.shape.estimatedRows ?? 0,
      bytes: task?.shape.bytes ?? 0,
      key: task?.shape.keyDescription ?? '',
      copiedRows: p.rows,
      copiedBytes: p.bytes,
    });
  }
  return out;
}

/** Keyless tables: the target's whole-table digest against the sum of the source batch digests. */
async function verifyKeylessTables(o: CopyPhaseOptions, slot: Slot, ensure: (s: Slot) => Promise<{ target: pg.Client }>): Promise<number> {
  let mismatches = 0;
  for (const task of o.tasks.values()) {
    if (task.shape.keyColumns) continue;
    const batches = (await o.store.listBatches(o.runId)).filter((b) => b.relation === task.display);
    if (batches.length === 0 || batches.every((b) => b.status === 'verified')) continue;
    if (batches.some((b) => b.status !== 'copied' && b.status !== 'verified')) continue;
    const expected = batches.reduce<Digest>((acc, b) => addDigests(acc, parseDigest(b.source_checksum)), EMPTY_DIGEST);
    const { target } = await ensure(slot);
    const actual = await digestRange(target, task, null);
    const ok = digestEquals(actual, expected);
    const judged = (b: BatchRow) => ({ id: b.id, sourceChecksum: b.source_checksum ?? '', targetChecksum: `table:${digestText(actual)}` });
    // A verdict counts only where it applied: another process may have settled the batches (and
    // live sync moved the table on) while this digest was read.
    let marked = false;
    for (const b of batches) {
      if (ok) await markBatchVerified(o.store.pool, o.store.schema, judged(b));
      else
        marked =
          (await markBatchMismatch(
            o.store.pool,
            o.store.schema,
            judged(b),
            `table checksum mismatch: source ${digestText(expected)}, target ${digestText(actual)}`,
          )) || marked;
    }
    if (!ok && marked) {
      mismatches += 1;
      o.emit('batch:mismatch', {
        table: task.display,
        batchId: 'table',
        seq: -1,
        source: digestText(expected),
        target: digestText(actual),
      });
      await o.store.appendEvent(o.runId, 'batch:mismatch', `${task.display}: table checksum mismatch`, {
        source: digestText(expected),
        target: digestText(actual),
      });
    }
  }
  return mismatches;
}

/** The Blob container (created if absent) and source connections for documents, if any. */
async function openDocuments(o: CopyPhaseOptions): Promise<DocumentsContext | null> {
  if (!o.blob || ![...o.tasks.values()].some((t) => t.documents)) return null;
  const container = createContainerClient(o.blob.plan, o.blob.credentials, {
    retryOptions: { maxTries: o.blobRetries ?? 6, retryDelayInMs: o.retryBaseDelayMs ?? 500, maxRetryDelayInMs: 30_000 },
    ...(o.blobTryTimeoutMs === undefined ? {} : { tryTimeoutMs: o.blobTryTimeoutMs }),
  });
  try {
    await container.ensureExists();
  } catch (err) {
    if (err instanceof RestError) throw blobError(err);
    throw err;
  }
  const clients: pg.Client[] = [];
  // Large objects are read one per upload; bytea documents stream per batch (their slot's session),
  // and need one session here only for the sweep's sampled reads.
  const largeObjects = [...o.tasks.values()].some((t) => t.documents?.contentKind === 'oid');
  const open = async () => {
    const c = await connect({
      role: 'source',
      connectionString: o.sourceUrl,
      applicationName: 'cloudshift documents',
      settings: COPY_SESSION,
    });
    try {
      await beginInSnapshot(c, o.snapshot);
    } catch (err) {
      await c.end().catch(() => undefined);
      throw err;
    }
    return c;
  };
  try {
    for (let i = 0; i < (largeObjects ? o.blobConcurrency : 1); i += 1) clients.push(await open());
  } catch (err) {
    await Promise.allSettled(clients.map((c) => c.end()));
    throw err;
  }
  const db = o.store.pool;
  return {
    container,
    content: new ClientPool(clients, open),
    uploads: new PQueue({ concurrency: o.blobConcurrency }),
    blobConcurrency: o.blobConcurrency,
    ...DEFAULT_BLOCKS,
    buffers: new BlockBuffers(DEFAULT_BLOCK_SIZE, o.blobConcurrency + o.jobs),
    store: {
      recorded: (relation, keys) => recordedDocuments(db, o.store.schema, o.runId, relation, keys),
      record: (relation, docs, batchId) =>
        recordDocuments(db, o.store.schema, o.runId, relation, docs, {
          id: batchId,
          claim: { workerId: o.workerId, snapshot: o.snapshot },
        }),
      forgetOthers: (relation, keys, claim) => forgetOtherDocuments(db, o.store.schema, o.runId, relation, keys, claim),
    },
    ...(o.abortSignal ? { abortSignal: o.abortSignal } : {}),
  };
}

/** A documents batch whose rows were verified; its documents wait for the sweep. */
const rowsVerified = (o: CopyPhaseOptions, b: BatchRow) =>
  b.status === 'copied' && o.tasks.get(b.relation)?.documents !== undefined && b.target_checksum !== null;

/**
 * The sweep over the documents uploaded so far (sweepDocuments): a batch with a wrong document
 * gets another attempt (or, after one, is a mismatch); a batch whose rows and documents are all
 * verified is verified. Returns the batches found mismatched.
 */
async function verifyDocuments(o: CopyPhaseOptions, documents: DocumentsContext): Promise<number> {
  const { pool, schema } = o.store;
  const tasks = [...o.tasks.values()].filter((t) => t.documents);
  const swept = await sweepDocuments({
    db: pool,
    schema,
    runId: o.runId,
    container: documents.container,
    tasks,
    content: documents.content,
    ...(o.sampleEvery === undefined ? {} : { sampleEvery: o.sampleEvery }),
  });
  if (swept.extraCount > 0) {
    o.emit('warning', {
      message: `${swept.extraCount} blob${swept.extraCount === 1 ? '' : 's'} in container "${o.blob!.plan.container}" ${swept.extraCount === 1 ? 'is' : 'are'} no document of this run (${swept.extra.slice(0, 3).join(', ')}${swept.extraCount > 3 ? ', …' : ''}); \`cloudshift verify --repair\` deletes them`,
    });
  }
  const byBatch = new Map<string, WrongDocument[]>();
  for (const w of swept.wrong) {
    if (w.batchId === null) continue;
    const list = byBatch.get(w.batchId) ?? [];
    list.push(w);
    byBatch.set(w.batchId, list);
  }
  let mismatched = 0;
  const batches = byBatch.size > 0 ? new Map((await o.store.listBatches(o.runId)).map((x) => [x.id, x])) : new Map<string, BatchRow>();
  // Documents of no batch here (live sync's) are just forgotten; a batch's go with its return to pending.
  for (const w of swept.wrong) {
    if (w.batchId === null || !batches.has(w.batchId)) await forgetRecord(pool, schema, o.runId, w);
  }
  for (const [batchId, wrong] of byBatch) {
    const reason = `document ${wrong[0]!.name}: ${wrong[0]!.reason}${wrong.length > 1 ? ` (and ${wrong.length - 1} more)` : ''}`;
    const b = batches.get(batchId);
    if (!b) continue;
    const became = await returnForDocuments(pool, schema, o.runId, batchId, wrong, reason);
    if (became === 'pending') o.emit('batch:retry', { table: b.relation, batchId, seq: b.seq, attempt: b.attempts, reason });
    if (became !== 'mismatch') continue;
    mismatched += 1;
    o.emit('batch:mismatch', { table: b.relation, batchId, seq: b.seq, source: b.source_checksum ?? '', target: reason });
    await o.store.appendEvent(o.runId, 'batch:mismatch', `${b.relation} batch ${b.seq}: ${reason}`, { batchId });
  }
  const relations = tasks.map((t) => t.display);
  for (const b of await returnBatchesHoldingWrong(pool, schema, o.runId, relations)) {
    o.emit('batch:retry', {
      table: b.relation,
      batchId: b.id,
      seq: b.seq,
      attempt: b.attempts,
      reason: 'a document found wrong was kept by an attempt under way',
    });
  }
  for (const b of await settleDocumentBatches(pool, schema, o.runId, relations)) {
    o.emit('batch:verified', { table: b.relation, batchId: b.id, seq: b.seq });
  }
  return mismatched;
}
