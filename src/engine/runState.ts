/**
 * Opening a run: resume the plan's active run (refusing a changed plan unless forced), report a
 * finished one, or start a new one; then take the run's lock so no second process works on it.
 */
import { PreconditionError, StateConflictError } from '../errors.js';
import { listWorkers } from '../state/sql/workers.js';
import type { LoadedPlan } from '../plan/parse.js';
import { displayName } from '../plan/names.js';
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
  /** Another process leads the run (or this one may not lead): join it as a worker. */
  worker: boolean;
}

export interface OpenRunOptions {
  force: boolean;
  workerOnly?: boolean;
  /** Refuse to join when this many workers are alive. */
  maxWorkers?: number | undefined;
  /** Heartbeat age after which a worker is gone, ms. */
  staleMs?: number;
}

export async function openRun(store: StateStore, loaded: LoadedPlan, options: OpenRunOptions): Promise<OpenedRun> {
  const { plan } = loaded;
  const active = await store.getActiveRun(plan.name);
  if (active) {
    const leads = !options.workerOnly && (await store.tryLock(`cloudshift.run:${active.id}`));
    if (!leads && active.plan_fingerprint !== loaded.fingerprint) {
      throw new StateConflictError(
        `run ${active.id} of plan "${plan.name}" is in progress with a different plan: a worker must use the same plan`,
        {
          hint: `use the plan file the run began with (fingerprint ${active.plan_fingerprint.slice(0, 12)}…)`,
        },
      );
    }
    if (!leads) {
      const alive = (await listWorkers(store.knex, active.id, options.staleMs ?? 20_000)).filter((w) => w.alive).length;
      if (options.maxWorkers !== undefined && alive >= options.maxWorkers) {
        throw new StateConflictError(`run ${active.id} of plan "${plan.name}" already has ${alive} workers (most ${options.maxWorkers})`, {
          hint: 'raise copy.maxWorkers (or --max-workers), or let the run finish',
        });
      }
      return { run: active, resumed: true, alreadyFinished: false, worker: true };
    }
    if (active.plan_fingerprint !== loaded.fingerprint) {
      // A run still in phase 'created' has copied and created nothing yet (it stopped on a
      // precondition the plan may just have been changed to meet): it goes on with the new plan.
      const untouched = active.phase === 'created';
      if (!options.force && !untouched) {
        throw new StateConflictError(
          `the plan changed since run ${active.id} began on ${active.created_at.toISOString()} (phase ${active.phase}); cloudshift will not resume it with a different plan`,
          { hint: `undo the change to ${loaded.file}, or run again with --force to resume with the changed plan` },
        );
      }
      await requirePlannedTables(store, active, loaded);
      await store.updateFingerprint(active.id, loaded.fingerprint);
      const why = untouched ? 'nothing was copied yet' : '--force';
      await store.appendEvent(active.id, 'run:forced', `resumed with a changed plan (${why})`, {
        previous: active.plan_fingerprint,
        now: loaded.fingerprint,
      });
    }
    await store.appendEvent(active.id, 'run:resume', `resumed in phase ${active.phase}`, { toolVersion });
    return { run: active, resumed: true, alreadyFinished: false, worker: false };
  }
  const latest = await store.getLatestRun(plan.name);
  if (latest?.status === 'finished' && latest.plan_fingerprint === loaded.fingerprint) {
    return { run: latest, resumed: false, alreadyFinished: true, worker: false };
  }
  if (options.workerOnly) {
    throw new PreconditionError(`plan ${plan.name} has no run in progress to join (--worker-only never starts one)`, {
      hint: 'start the run with `cloudshift run` (without --worker-only) first',
    });
  }
  let run: RunRow;
  try {
    run = await store.createRun({ planName: plan.name, planFingerprint: loaded.fingerprint, toolVersion });
  } catch (err) {
    // Another process started the run at the same moment: join it.
    if (/runs_one_active_per_plan/.test(String((err as Error).message)) && (await store.getActiveRun(plan.name))) {
      return openRun(store, loaded, options);
    }
    throw err;
  }
  // Another process found the new run between its insert and this lock, and leads it: join it.
  if (!(await store.tryLock(`cloudshift.run:${run.id}`))) return openRun(store, loaded, options);
  await store.appendEvent(run.id, 'run:start', `run of plan ${plan.name} started`, { toolVersion, fingerprint: loaded.fingerprint });
  return { run, resumed: false, alreadyFinished: false, worker: false };
}

/**
 * A run's tables are fixed once its batches are planned: a plan resumed with --force that adds a
 * table would finish without ever creating or copying it (the schema and planning phases are
 * over), and one that drops a table would leave batches no process may copy. Refused (exit 4)
 * before the run takes the changed plan, naming the tables.
 */
async function requirePlannedTables(store: StateStore, run: RunRow, loaded: LoadedPlan): Promise<void> {
  const changes = tablesChanged(await store.plannedRelations(run.id), loaded);
  if (changes.length === 0) return;
  throw new StateConflictError(
    `the plan ${changes.join(' and ')}, but run ${run.id} (phase ${run.phase}) planned its batches for the tables it had then: a run's tables are fixed once they are planned`,
    {
      hint: `undo that change to ${loaded.file}; migrate other tables with a plan of their own (another name), or end this run with \`cloudshift cleanup\` and start again`,
    },
  );
}

/**
 * How the plan's tables differ from those a run planned batches for (`planned`; none planned yet
 * is no difference): "adds …", "no longer has …". A changed plan that says any is refused even
 * with --force.
 */
export function tablesChanged(planned: readonly string[], loaded: LoadedPlan): string[] {
  if (planned.length === 0) return [];
  const { plan } = loaded;
  const tables = [...new Set([...plan.documents.map((d) => displayName(d.table)), ...plan.tables.map((t) => displayName(t.name))])];
  const added = tables.filter((t) => !planned.includes(t));
  const dropped = planned.filter((t) => !tables.includes(t));
  return [
    ...(added.length > 0 ? [`adds ${added.join(', ')}`] : []),
    ...(dropped.length > 0 ? [`no longer has ${dropped.join(', ')}`] : []),
  ];
}
