/**
 * Opening a run: resume the plan's active run (refusing a changed plan unless forced), report a
 * finished one, or start a new one; then take the run's lock so no second process works on it.
 */
import { StateConflictError } from '../errors.js';
import type { LoadedPlan } from '../plan/parse.js';
import type { StateStore } from '../state/store.js';
import type { RunRow } from '../state/types.js';
import { toolVersion } from '../version.js';

/** The run's steps in order; `runs.phase` holds the step in progress. */
export const PHASES = ['created', 'schema', 'planning', 'copy', 'indexes', 'sequences', 'final', 'sync', 'cutover', 'done'] as const;
export type Phase = (typeof PHASES)[number];

export interface OpenedRun {
  run: RunRow;
  resumed: boolean;
  alreadyFinished: boolean;
}

export async function openRun(store: StateStore, loaded: LoadedPlan, options: { force: boolean }): Promise<OpenedRun> {
  const { plan } = loaded;
  const active = await store.getActiveRun(plan.name);
  if (active) {
    await store.lockRun(active);
    if (active.plan_fingerprint !== loaded.fingerprint) {
      if (!options.force) {
        throw new StateConflictError(
          `the plan changed since run ${active.id} began on ${active.created_at.toISOString()} (phase ${active.phase}); cloudshift will not resume it with a different plan`,
          { hint: `undo the change to ${loaded.file}, or run again with --force to resume with the changed plan` },
        );
      }
      await store.updateFingerprint(active.id, loaded.fingerprint);
      await store.appendEvent(active.id, 'run:forced', 'resumed with a changed plan (--force)', {
        previous: active.plan_fingerprint,
        now: loaded.fingerprint,
      });
    }
    await store.appendEvent(active.id, 'run:resume', `resumed in phase ${active.phase}`, { toolVersion });
    return { run: active, resumed: true, alreadyFinished: false };
  }
  const latest = await store.getLatestRun(plan.name);
  if (latest?.status === 'finished' && latest.plan_fingerprint === loaded.fingerprint) {
    return { run: latest, resumed: false, alreadyFinished: true };
  }
  let run: RunRow;
  try {
    run = await store.createRun({ planName: plan.name, planFingerprint: loaded.fingerprint, toolVersion });
  } catch (err) {
    if (/runs_one_active_per_plan/.test(String((err as Error).message))) {
      throw new StateConflictError(`another cloudshift process started a run of plan "${plan.name}" at the same moment`, {
        cause: err,
        hint: 'let it work; `cloudshift run` again later resumes or reports it',
      });
    }
    throw err;
  }
  await store.lockRun(run);
  await store.appendEvent(run.id, 'run:start', `run of plan ${plan.name} started`, { toolVersion, fingerprint: loaded.fingerprint });
  return { run, resumed: false, alreadyFinished: false };
}
