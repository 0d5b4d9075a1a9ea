/**
 * A cutover or rollback that did not end (the process was killed, the machine lost power) is
 * finished or undone by the next cloudshift command that touches the run, never left half-way
 * and never with PgBouncer paused:
 * - finished when it got past its commit point: the `switched` state, or PgBouncer's databases
 *   file already naming the new side (a PgBouncer restart would route there; the running one is
 *   told by a RELOAD, which the killed process may not have sent);
 * - undone otherwise: the switch names the old side, its write fence goes, the opposite stream's
 *   slot is dropped; then RESUME.
 */
import { latestSwitch, updateSwitch } from '../state/sql/sync.js';
import type { SwitchContext } from './context.js';
import { describeSide } from './context.js';
import { afterSwitch, undo, type RecoveryOutcome, type SwitchDetails } from './switchOver.js';

export async function recoverSwitch(ctx: SwitchContext): Promise<RecoveryOutcome | null> {
  const { store, run, app } = ctx;
  const pending = await latestSwitch(store.knex, run.id);
  if (!pending || pending.state === 'done' || pending.state === 'aborted') return null;
  const details = pending.details as unknown as SwitchDetails;
  const now = await app.current();
  const finish = pending.state === 'switched' || (details.pointing === true && now === details.to);
  if (finish) {
    await store.updateRun(run.id, { phase: pending.kind === 'cutover' ? 'cutover' : 'sync' });
    if (pending.state !== 'switched') await app.point(details.to);
    await app.release();
    await updateSwitch(store.knex, pending.id, { state: 'done', details: { ...details, recovered: 'finished' } });
    await store.appendEvent(
      run.id,
      `${pending.kind}:recovered`,
      `the interrupted ${pending.kind} ${pending.id} had reached its commit point: finished, the application is on ${describeSide(ctx, details.to)}`,
      { switchId: pending.id, outcome: 'finished' },
    );
    await afterSwitch(ctx, pending.kind, false);
  } else {
    await undo(ctx, pending.kind, details);
    await updateSwitch(store.knex, pending.id, {
      state: 'aborted',
      details: { ...details, recovered: 'undone', reason: `interrupted at state ${pending.state}` },
    });
    await store.appendEvent(
      run.id,
      `${pending.kind}:recovered`,
      `the interrupted ${pending.kind} ${pending.id} (state ${pending.state}) was undone: the application is on ${describeSide(ctx, details.from)}`,
      { switchId: pending.id, outcome: 'undone' },
    );
  }
  ctx.say(`an interrupted ${pending.kind} was ${finish ? 'finished' : 'undone'}`);
  return { switchId: pending.id, kind: pending.kind, outcome: finish ? 'finished' : 'undone' };
}
