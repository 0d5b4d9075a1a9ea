/**
 * Several `cloudshift run` processes, on one machine or many, share a run through the state
 * store. The leader holds the run's lock: it plans, exports the snapshot (kept open for the whole
 * copy), copies like everyone else, waits for the others' batches, then builds indexes and runs
 * the live sync. A worker joins while the run is copying: it copies batches inside the leader's
 * exported snapshot (imported by name), claimed with FOR UPDATE SKIP LOCKED. When the leader is
 * gone (its lock is free), a worker that may lead takes the lock and carries on as the leader.
 */
import { delay } from '../embedded/util.js';
import { StateConflictError } from '../errors.js';
import type { StateStore } from '../state/store.js';
import type { RunRow } from '../state/types.js';
import { PHASES, type Phase } from './runState.js';
import type { CopyPhaseResult } from './copyPhase.js';

export type WorkerOutcome = { kind: 'lead'; run: RunRow } | { kind: 'done' } | { kind: 'interrupted' };

export interface WorkerLoop {
  store: StateStore;
  runId: string;
  /** Never take the lead (autoscaled pools). */
  workerOnly: boolean;
  /** The plan this process joined with. */
  fingerprint: string;
  /** Stay during the live sync, ready to take it over if the leader goes (else leave after the copy). */
  standby: boolean;
  copy(snapshot: string | null): Promise<CopyPhaseResult>;
  doing(what: string): void;
  /** Gives this worker's claims back (nothing of it in flight: a batch that failed on a snapshot gone). */
  releaseMine(): Promise<void>;
  abortSignal: AbortSignal | undefined;
  pollMs?: number;
}

/** A snapshot that cannot be imported: its exporter (the leader) is gone. */
function snapshotGone(err: unknown): boolean {
  return /invalid snapshot identifier|could not import the requested snapshot|snapshot .* does not exist/i.test(
    String((err as Error)?.message),
  );
}

/**
 * A leader resumed the run with --force and a changed plan: this process must not copy, nor
 * lead, by the old one (its claims stop at once: claimBatches).
 */
function refuseChangedPlan(run: RunRow, fingerprint: string): void {
  if (run.plan_fingerprint !== fingerprint) {
    throw new StateConflictError(
      `the plan of run ${run.id} changed since this process joined it (its leader resumed it with --force): this worker stopped`,
      {
        hint: 'start it again with the plan the run uses now',
      },
    );
  }
}

export async function workAsWorker(o: WorkerLoop): Promise<WorkerOutcome> {
  const copyAt = PHASES.indexOf('copy');
  for (;;) {
    if (o.abortSignal?.aborted) return { kind: 'interrupted' };
    const run = await o.store.getRun(o.runId);
    if (!run || run.status !== 'active') return { kind: 'done' };
    refuseChangedPlan(run, o.fingerprint);
    if (!o.workerOnly && (await o.store.tryLock(`cloudshift.run:${run.id}`))) {
      // Read again under the lock: a cutover may have recorded its phase since (its leader gone
      // before it took the lock), or a leader resumed it with another plan and died.
      const now = (await o.store.getRun(o.runId)) ?? run;
      refuseChangedPlan(now, o.fingerprint);
      return { kind: 'lead', run: now };
    }
    const at = PHASES.indexOf(run.phase as Phase);
    // A standby stays from the end of the copy (indexes, sequences, views) through the live sync,
    // to take over if the leader goes; a cutover ends its part.
    const standing = o.standby && !o.workerOnly && at < PHASES.indexOf('cutover');
    if (at > copyAt && !standing) return { kind: 'done' };
    if (at > copyAt) {
      o.doing('standby: takes over the live sync if the leader goes');
      await delay(o.pollMs ?? 500);
      continue;
    }
    if (at === copyAt && run.snapshot_name) {
      o.doing('copying');
      try {
        const r = await o.copy(run.snapshot_name);
        if (r.stoppedEarly) return { kind: 'interrupted' };
      } catch (err) {
        if (!snapshotGone(err)) throw err;
        o.doing('waiting for a new snapshot (the leader is gone)');
      }
      // Nothing of this worker is in flight now: a claim it still holds goes back to the others.
      await o.releaseMine();
    } else {
      o.doing(`waiting for the leader (phase ${run.phase})`);
    }
    await delay(o.pollMs ?? 500);
  }
}
