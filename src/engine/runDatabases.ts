/**
 * A run is worked on only on the databases it began on: the plan's fingerprint covers its
 * references (`${env:SOURCE_DATABASE_URL}`), not what they resolve to, and a process whose
 * environment names another source would copy the rest from there (another target, with the
 * state store elsewhere, would miss every batch marked done; `verify --repair` would make the
 * target match the wrong source). The run's leader records the databases it reached; every
 * process that resumes, joins, switches, rolls back, cleans up or verifies the run is refused
 * (exit 4) elsewhere, naming both. Only the leader may move the run: forced, or while it has done
 * nothing yet.
 */
import { StateConflictError } from '../errors.js';
import { connect } from '../pg/connect.js';
import { databaseIdentity, movedSides, SIDES, type Side } from '../pg/identity.js';
import type { StateStore } from '../state/store.js';
import type { RunDatabases, RunRow } from '../state/types.js';

/** Who is asking: the leader (which may move the run), or any other process (which may not). */
export type DatabasesRole = 'leader' | 'other';

/**
 * The leader records the databases when the run has none (a new run, or one begun before
 * cloudshift recorded them), moves the run when it may, or is refused; it holds the run's lock, so
 * the phase it reads here is the run's. Any other process only reads: refused on other databases,
 * and let be while nothing is recorded (the leader records before anything is copied, so a worker
 * checks again before it copies, and after it takes the lead).
 */
export async function settleRunDatabases(
  store: StateStore,
  runId: string,
  found: RunDatabases,
  options: { role: DatabasesRole; force?: boolean },
): Promise<void> {
  const run = (await store.getRun(runId))!;
  if (options.role !== 'leader') return refuseMoved(run, await store.recordedDatabases(runId), found, options.role);
  const began = await store.runDatabases(runId, found);
  const moved = movedSides(began, found);
  if (moved.length === 0) {
    // A system identifier the record lacks (unreadable then) and this process could read: kept now,
    // side by side (one this process cannot read stays as recorded).
    const filled = (side: Side) => ({ ...began[side], system: began[side].system ?? found[side].system });
    if (SIDES.some((side) => began[side].system === null && found[side].system !== null))
      await store.runDatabases(runId, { source: filled('source'), target: filled('target') }, true);
    return;
  }
  // A run still in phase 'created' has copied and created nothing yet (it stopped on a
  // precondition, which pointing the plan elsewhere may meet): it goes on where it is pointed now.
  const untouched = run.phase === 'created';
  if (options.force !== true && !untouched) refuseMoved(run, began, found, options.role);
  await store.runDatabases(runId, found, true);
  const what = moved.map((m) => m.change).join('; ');
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

/**
 * The databases the plan's connections reach now. `reachableOnly`: a side that cannot be
 * reached is left out (a command that must still work with one side down checks the other).
 */
export async function reachedDatabases(urls: { source: string; target: string }, reachableOnly = false): Promise<Partial<RunDatabases>> {
  const found: Partial<RunDatabases> = {};
  for (const role of SIDES) {
    let client;
    try {
      client = await connect({ role, connectionString: urls[role] });
    } catch (err) {
      if (reachableOnly) continue;
      throw err;
    }
    try {
      found[role] = await databaseIdentity(client);
    } finally {
      await client.end().catch(() => undefined);
    }
  }
  return found;
}

/**
 * For a command that works on a run without leading it (verify; rollback before cutover and
 * cleanup, which must work with one side down, `reachableOnly`): refused (exit 4) where the plan
 * now reaches other databases than the run's. Nothing is recorded.
 */
export async function requireRunDatabases(
  store: StateStore,
  run: Pick<RunRow, 'id' | 'plan_name'>,
  urls: { source: string; target: string },
  reachableOnly = false,
): Promise<void> {
  const began = await store.recordedDatabases(run.id);
  if (began) refuseMoved(run, began, await reachedDatabases(urls, reachableOnly), 'other');
}
