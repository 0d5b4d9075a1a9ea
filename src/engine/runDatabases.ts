/**
 * A run is worked on only on the databases it began on: the plan's fingerprint covers its
 * references (`${env:SOURCE_DATABASE_URL}`), not what they resolve to, and a process whose
 * environment names another source would copy the rest from there (another target, with the
 * state store elsewhere, would miss every batch marked done; `verify --repair` would make the
 * target match the wrong source). The run's leader records the databases it reached; every
 * process that resumes, joins, switches or verifies the run is refused (exit 4) elsewhere, naming
 * both. Only the leader may move the run: forced, or while it has done nothing yet.
 */
import { StateConflictError } from '../errors.js';
import { movedSides } from '../pg/identity.js';
import type { StateStore } from '../state/store.js';
import type { RunDatabases, RunRow } from '../state/types.js';

/** Who is asking: the leader (which may move the run), or any other process (which may not). */
export type DatabasesRole = 'leader' | 'other';

/**
 * Records the databases if the run has none yet, and checks them. The leader holds the run's
 * lock, so the phase it reads here is the run's; a worker's record made before the leader's is
 * replaced by the leader's while the run is in phase 'created', so a worker checks again before
 * it copies anything.
 */
export async function settleRunDatabases(
  store: StateStore,
  runId: string,
  found: RunDatabases,
  options: { role: DatabasesRole; force?: boolean },
): Promise<void> {
  const run = (await store.getRun(runId))!;
  const began = await store.runDatabases(runId, found);
  if (movedSides(began, found).length === 0) return;
  // A run still in phase 'created' has copied and created nothing yet (it stopped on a
  // precondition, which pointing the plan elsewhere may meet): it goes on where it is pointed now.
  const untouched = run.phase === 'created';
  if (options.role !== 'leader' || (options.force !== true && !untouched)) refuseMoved(run, began, found, options.role);
  await store.runDatabases(runId, found, true);
  const what = movedSides(began, found)
    .map((m) => m.change)
    .join('; ');
  const why = untouched ? 'nothing was copied yet' : '--force';
  await store.appendEvent(runId, 'run:forced', `resumed on other databases (${why}): ${what}`, { previous: began, now: found });
}

/** Throws (exit 4) when `found` are not the databases the run began on (`began` null: none recorded). */
export function refuseMoved(
  run: Pick<RunRow, 'id' | 'plan_name'>,
  began: RunDatabases | null,
  found: Partial<RunDatabases>,
  role: DatabasesRole,
): void {
  const moved = began ? movedSides(began, found) : [];
  if (moved.length === 0) return;
  const sides = moved.map((m) => `${m.side}.postgres`).join(' and ');
  throw new StateConflictError(
    `run ${run.id} of plan "${run.plan_name}" began on other databases: ${moved.map((m) => m.change).join('; ')}`,
    {
      hint: `set the plan's ${sides} as when the run began${role === 'leader' ? '; or run again with --force if this is the same data (restored elsewhere)' : ''}`,
    },
  );
}
