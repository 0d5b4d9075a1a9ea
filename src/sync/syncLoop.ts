/**
 * Live sync: streams the slot's changes and applies them until told to stop. Invariants:
 * - a position is acknowledged to the source only after the target transaction holding it
 *   committed (Applier.handle returns it only then);
 * - a heartbeat (a non-transactional logical message, once per interval) measures the lag end to
 *   end: the time from writing it on the source to saving its position on the target;
 * - a broken connection (walsender or apply session terminated, network) is reopened and the
 *   stream restarts from the saved position; a slot the source invalidated is refused with what to
 *   do, never resumed;
 * - a stop request (Ctrl-C, cutover done, a fence reached) abandons an open transaction, which is
 *   then replayed next time: nothing half-applied is kept.
 */
import type { DocumentContainer } from '../target/blob/container.js';
import type pg from 'pg';
import { PreconditionError, messageOf } from '../errors.js';
import { connect } from '../pg/connect.js';
import type { TableTask } from '../engine/tableTask.js';
import { Applier, SyncStoppedError, type ApplierOptions, type Divergence, type Progress } from './apply.js';
import { documentSink, type SyncDocumentStore } from './documents.js';
import { formatLsn, type Lsn } from './lsn.js';
import { currentWalLsn, emitMessage, FLUSH_SETTINGS, retainedWalWarning, slotGone, slotState, unpublishedTables } from './objects.js';
import { replicationConnection, senderTimeoutMs, startStream, type ChangeStream } from './replication.js';

export const MESSAGE_PREFIX = 'cloudshift';

export interface SyncStats {
  applied: Lsn;
  lagMs: number | null;
  lagBytes: number | null;
  retainedWalBytes: number | null;
  transactions: number;
  changes: number;
  divergences: number;
}

export type StopReason = 'synced' | 'stopped' | 'fence' | 'switched' | 'aborted';

export interface SyncLoopOptions {
  /** Where changes come from (the source for forward sync, the target for reverse). */
  fromUrl: string;
  fromSide: 'source' | 'target';
  /** Where they are applied. */
  toUrl: string;
  slot: string;
  publication: string;
  tables: readonly TableTask[];
  progress: Progress;
  tolerateUntil: Lsn | null;
  documents: { container: DocumentContainer; store: SyncDocumentStore } | null;
  /** Return once the measured lag is under this many ms. */
  untilLagMs?: number;
  /**
   * Return once this position is applied (a cutover draining the stream it runs itself): a
   * position, or a getter polled after every message, for a fence set while streaming.
   */
  untilFence?: Lsn | (() => Lsn | null);
  /** Reverse sync: documents come back from their blobs (Applier's `reverse`). */
  reverse?: ApplierOptions['reverse'];
  heartbeatMs: number;
  warnRetainedWalBytes: number;
  abortSignal?: AbortSignal;
  /** Polled once per heartbeat: true stops the sync (the cutover switched). */
  shouldStop?: () => Promise<boolean>;
  onStats?: (s: SyncStats) => Promise<void> | void;
  onDivergence: (d: Divergence) => Promise<void>;
  onWarning?: (message: string) => Promise<void> | void;
  onReconnect?: (reason: string, attempt: number) => Promise<void> | void;
  /** Reconnect attempts after transient failures, in a row (reset by progress). */
  maxReconnects?: number;
  reconnectDelayMs?: number;
  /** Called after each applied transaction (fault tests). */
  afterCommit?: (count: number) => Promise<void> | void;
  /**
   * A change found no partition on the target for its row (23514): creates the partitions made
   * on the source since, returning how many. Any: the stream resumes at the failed transaction.
   */
  onMissingPartition?: () => Promise<number>;
}

/** PostgreSQL found no partition of the target table for a row (check_violation, its message). */
function missingPartition(err: unknown): boolean {
  return (err as { code?: string }).code === '23514' && /no partition of relation/.test(messageOf(err));
}

export interface SyncLoopResult {
  reason: StopReason;
  stats: SyncStats;
}

const TRANSIENT =
  /Connection terminated|not queryable|is active for PID|ECONNRESET|EPIPE|ECONNREFUSED|premature close|terminating connection|server closed the connection/i;

/**
 * Failures worth reconnecting for: a broken connection, or the slot still held by a walsender
 * that has not yet noticed its client went away (a previous process that stopped or was killed).
 */
export function isTransient(err: unknown): boolean {
  const code = (err as { code?: string }).code ?? '';
  return ['57P01', '57P02', '57P03', '08006', '08003', '08001', 'ECONNRESET', 'EPIPE'].includes(code) || TRANSIENT.test(messageOf(err));
}

export async function syncLoop(o: SyncLoopOptions): Promise<SyncLoopResult> {
  const stats: SyncStats = {
    applied: 0n,
    lagMs: null,
    lagBytes: null,
    retainedWalBytes: null,
    transactions: 0,
    changes: 0,
    divergences: 0,
  };
  let failures = 0;
  for (;;) {
    try {
      const reason = await session(o, stats, () => {
        failures = 0;
      });
      return { reason, stats };
    } catch (err) {
      // Its transaction rolled back and was not acknowledged: the next session streams it again.
      if (missingPartition(err) && o.onMissingPartition && !o.abortSignal?.aborted && (await o.onMissingPartition()) > 0) continue;
      if (!isTransient(err) || o.abortSignal?.aborted) throw err;
      // A cutover that switched drops the slot under us: that is the end, not a failure.
      if (o.shouldStop && (await o.shouldStop().catch(() => false))) return { reason: 'switched', stats };
      failures += 1;
      if (failures > (o.maxReconnects ?? 10)) throw err;
      await o.onReconnect?.(messageOf(err), failures);
      await new Promise((r) => setTimeout(r, Math.min(5_000, (o.reconnectDelayMs ?? 200) * 2 ** (failures - 1))));
    }
  }
}

/** One streaming session; a transient failure ends it and syncLoop opens the next. */
async function session(o: SyncLoopOptions, stats: SyncStats, onProgress: () => void): Promise<StopReason> {
  const clients: pg.Client[] = [];
  const open = async (url: string, name: string, role: 'source' | 'target', settings: ReadonlyArray<readonly [string, string]> = []) => {
    const c = await connect({ role, connectionString: url, applicationName: name, settings });
    clients.push(c);
    return c;
  };
  let stream: ChangeStream | null = null;
  let timer: NodeJS.Timeout | undefined;
  try {
    const monitor = await open(o.fromUrl, 'cloudshift sync monitor', 'source', FLUSH_SETTINGS);
    const slot = await slotState(monitor, o.slot);
    if (!slot.exists) throw slotGone(o.slot, o.fromSide);
    if (slot.walStatus === 'lost') {
      throw new PreconditionError(
        `replication slot "${o.slot}" was invalidated by the source (wal_status = lost): WAL it still needed was removed, so the target can no longer be brought up to date`,
        {
          hint: 'a fresh copy is needed: `cloudshift rollback --drop-target`, then `cloudshift run`; raise max_slot_wal_keep_size or keep the sync running to avoid it',
        },
      );
    }
    const reader = await open(o.fromUrl, 'cloudshift sync reader', 'source');
    // Its commits are acknowledged to the slot as flushed at once: they must be durable when
    // COMMIT returns, whatever the server's synchronous_commit (off loses the last ones at a crash).
    const target = await open(o.toUrl, 'cloudshift apply', 'target', FLUSH_SETTINGS);
    const applier = new Applier({
      target,
      source: reader,
      tables: o.tables,
      progress: o.progress,
      tolerateUntil: o.tolerateUntil,
      documents: o.documents ? documentSink(o.documents.container, reader, o.documents.store) : null,
      onDivergence: o.onDivergence,
      ...(o.reverse ? { reverse: o.reverse } : {}),
    });
    const fence = (): Lsn | null => (typeof o.untilFence === 'function' ? o.untilFence() : (o.untilFence ?? null));
    const from = await applier.start();
    // Forward, the slot never confirms more than the target committed (a position is saved before
    // it is acknowledged): a slot ahead means the target went back (restored to an earlier point),
    // and the server would start at the slot's position, past the changes in between.
    if (o.fromSide === 'source' && slot.confirmedFlush !== null && slot.confirmedFlush > from) {
      throw new PreconditionError(
        `the target has applied the stream up to ${formatLsn(from)}, but replication slot "${o.slot}" confirmed ${formatLsn(slot.confirmedFlush)}: the target went back (restored to an earlier point?), and the changes in between can no longer be streamed`,
        { hint: 'a fresh copy is needed: `cloudshift rollback --drop-target`, then `cloudshift run`' },
      );
    }
    stats.applied = from;
    const early = fence();
    if (early !== null && from >= early) return 'fence';
    const repl = await replicationConnection(o.fromUrl, 'cloudshift sync');
    stream = startStream(repl, o.slot, o.publication, from, await senderTimeoutMs(repl));
    const s = stream;

    let stop: StopReason | null = null;
    const requestStop = (reason: StopReason) => {
      stop ??= reason;
      void s.close();
    };
    const onAbort = () => requestStop('stopped');
    if (o.abortSignal?.aborted) return 'stopped';
    o.abortSignal?.addEventListener('abort', onAbort, { once: true });

    // Heartbeats: written on the source, their arrival saved on the target, the round trip is the lag.
    const beats: Array<{ lsn: Lsn; at: number }> = [];
    let lastRoundTrip: number | null = null;
    // Unknown until a heartbeat made the round trip: the first one waits behind the whole backlog
    // the stream starts with, whose age no heartbeat measured. Then: the oldest heartbeat still
    // on its way (older than one interval), else the last round trip.
    const lag = (): number | null => {
      if (lastRoundTrip === null) return null;
      const waiting = beats.length > 0 ? Date.now() - beats[0]!.at : 0;
      return waiting > o.heartbeatMs ? waiting : lastRoundTrip;
    };
    let warned = false;
    let ticking = false;
    // A table gone from the publication stops the sync (its changes would be lost without a word).
    let failure: Error | null = null;
    const published = new Map(o.tables.map((t) => [t.quoted, t.display]));
    const tick = async () => {
      if (ticking || stop) return;
      ticking = true;
      try {
        // Checked before the heartbeat, whose round trip may end a sync --until synced.
        const gone = await unpublishedTables(monitor, o.publication, [...published.keys()]);
        if (gone.length > 0) {
          const names = gone.map((q) => published.get(q)!).join(', ');
          failure = new SyncStoppedError(
            `${names} ${gone.length === 1 ? 'is' : 'are'} no longer in publication "${o.publication}" on the ${o.fromSide} (dropped, or dropped and created again, or swapped in by a rename): ${gone.length === 1 ? 'its' : 'their'} changes would not reach the ${o.fromSide === 'source' ? 'target' : 'source'}; live sync stopped`,
            `a table created again must be copied again: \`cloudshift rollback --drop-target\`, then \`cloudshift run\`; or put it back with ALTER PUBLICATION … ADD TABLE, mend the changes made meanwhile with \`cloudshift verify --repair\`, and run again`,
          );
          requestStop('stopped');
          return;
        }
        const sent = Date.now();
        beats.push({ lsn: await emitMessage(monitor, MESSAGE_PREFIX, { kind: 'heartbeat', at: sent }), at: sent });
        const st = await slotState(monitor, o.slot);
        const now = await currentWalLsn(monitor);
        stats.retainedWalBytes = st.retainedBytes;
        stats.lagBytes = Number(now > applier.position ? now - applier.position : 0n);
        stats.lagMs = lag();
        if (!warned && st.retainedBytes !== null && st.retainedBytes > o.warnRetainedWalBytes) {
          warned = true;
          await o.onWarning?.(
            retainedWalWarning(st.retainedBytes, o.slot, o.warnRetainedWalBytes, "keep the sync running, or the source's disk fills"),
          );
        }
        await o.onStats?.(stats);
        if (o.shouldStop && (await o.shouldStop())) requestStop('switched');
      } catch {
        // The monitor is best effort; the stream's own errors decide the session.
      } finally {
        ticking = false;
      }
    };
    timer = setInterval(() => void tick(), o.heartbeatMs);
    void tick();

    try {
      for await (const item of s.items()) {
        if (stop) break;
        if (item.kind !== 'change') continue;
        const m = item.message;
        let ack: Lsn | null = null;
        if (m.tag === 'message' && m.prefix === MESSAGE_PREFIX && !m.transactional) {
          const body = JSON.parse(m.content.toString('utf8')) as { kind: string; at: number };
          ack = await applier.reach(m.lsn, new Date(body.at));
          if (body.kind === 'heartbeat') {
            while (beats.length > 0 && beats[0]!.lsn <= applier.position) {
              lastRoundTrip = Date.now() - beats.shift()!.at;
            }
            stats.lagMs = lag();
            if (o.untilLagMs !== undefined && lastRoundTrip !== null && lastRoundTrip < o.untilLagMs && !applier.inTransaction) {
              requestStop('synced');
            }
          }
        } else {
          ack = await applier.handle(m);
          if (ack !== null) {
            stats.transactions += 1;
            onProgress();
            await o.afterCommit?.(stats.transactions);
            await applier.removeReleased();
          }
        }
        stats.changes = applier.stats.changes;
        stats.divergences = applier.stats.divergences;
        if (ack !== null) {
          stats.applied = ack;
          s.acknowledge(ack);
        }
        const f = fence();
        if (f !== null && applier.position >= f && !applier.inTransaction) requestStop('fence');
      }
    } catch (err) {
      await applier.abandon();
      if (failure) throw failure;
      if (stop) return stop;
      throw err;
    } finally {
      o.abortSignal?.removeEventListener('abort', onAbort);
    }
    await applier.abandon();
    if (failure) throw failure;
    if (stop) return stop;
    throw new Error('Connection terminated: the replication stream ended');
  } finally {
    clearInterval(timer);
    await stream?.close();
    await Promise.allSettled(clients.map((c) => c.end()));
  }
}
