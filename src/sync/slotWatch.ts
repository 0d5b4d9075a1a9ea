/**
 * The slot's WAL while no sync streams from it: from the copy's start until live sync begins
 * (the copy, the indexes, the sequences), the source keeps every change for the slot, and on a
 * big copy that is where its disk fills. The leader measures the slot every few seconds on a
 * session of its own and records what `status` shows during live sync: the WAL retained, and how
 * far the source is past the slot's confirmed position (what the sync will have to catch up);
 * the lag in time is unknown until a sync measures it. Warns once past sync.warnRetainedWalBytes.
 * Best effort: a failed measurement waits for the next.
 */
import type { Knex } from 'knex';
import type pg from 'pg';
import { settlesWithin } from '../embedded/util.js';
import { saveSyncStats } from '../state/sql/sync.js';
import { retainedWalWarning, slotBacklog } from './objects.js';

export interface SlotWatchOptions {
  knex: Knex;
  runId: string;
  slot: string;
  /** Opens the watch's own source session (the leader's is busy with the copy's work). */
  connect: () => Promise<pg.Client>;
  everyMs: number;
  warnRetainedWalBytes: number;
  /** Recorded as the measurement's author (applier), as live sync does. */
  workerId: string;
  /** Once past warnRetainedWalBytes (awaited: stop() waits for it). */
  onWarning: (message: string) => Promise<void> | void;
  /** The process lost its lock or was asked to stop: nothing more is written (another may lead). */
  abortSignal: AbortSignal;
}

/** How long stop() waits for a measurement under way (one on a source that stopped answering is left behind). */
const STOP_WAIT_MS = 2_000;

export interface SlotWatch {
  stop(): Promise<void>;
}

export function watchSlot(o: SlotWatchOptions): SlotWatch {
  let client: pg.Client | null = null;
  let ticking: Promise<void> | null = null;
  let stopped = false;
  let warned = false;
  const over = () => stopped || o.abortSignal.aborted;
  const tick = async () => {
    try {
      client ??= await o.connect();
      const st = await slotBacklog(client, o.slot);
      if (st === null || over()) return;
      await saveSyncStats(o.knex, o.runId, {
        lagBytes: st.behindBytes,
        lagMs: null,
        retainedWalBytes: st.retainedBytes,
        applier: o.workerId,
      });
      if (!warned && st.retainedBytes !== null && st.retainedBytes > o.warnRetainedWalBytes) {
        warned = true;
        const advice = "it grows until live sync begins after the copy and catches up: make sure the source's disk has room for it";
        await o.onWarning(retainedWalWarning(st.retainedBytes, o.slot, o.warnRetainedWalBytes, advice));
      }
    } catch {
      // The next tick tries again (on a new session if this one broke).
      await client?.end().catch(() => undefined);
      client = null;
    }
  };
  const run = () => {
    if (!ticking && !over()) ticking = tick().finally(() => (ticking = null));
  };
  const timer = setInterval(run, o.everyMs);
  timer.unref();
  run();
  return {
    async stop() {
      stopped = true;
      clearInterval(timer);
      if (ticking) await settlesWithin(ticking, STOP_WAIT_MS);
      // Not awaited: a session to a source that stopped answering would hold the run up.
      void client?.end().catch(() => undefined);
    },
  };
}
