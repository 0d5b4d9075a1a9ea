/**
 * A cutover or rollback that did not end (the process was killed, the machine lost power) is
 * finished or undone by the next cloudshift command that touches the run, never left half-way
 * and never with PgBouncer paused:
 * - finished when it got past its commit point: the `switched` state, or PgBouncer's databases
 *   file already naming the new side (a PgBouncer restart would route there; the running one is
 *   told by a RELOAD, which the killed process may not have sent), or, for a switch that cannot
 *   say where it points (a command), writes already made on the new side;
 * - undone otherwise: the switch names the old side, its write fence goes, the opposite stream's
 *   slot is dropped; then RESUME.
 * A switch done but killed before it dropped the stream it left behind is settled (the slot
 * would hold WAL on the side left until cleanup).
 */
import { latestSwitch, updateSwitch, type SwitchKind } from '../state/sql/sync.js';
import type { SwitchContext } from './context.js';
import { describeSide } from './context.js';
import { liftWriteFence } from './writeFence.js';
import { decideAfterPointing, settleSwitch, switchSides, undo, type RecoveryOutcome, type SwitchDetails } from './switchOver.js';

/** The switch needs the next command: it did not end, or ended without settling. */
export function switchPending(s: { state: string; details: unknown }): boolean {
  if (s.state === 'aborted') return false;
  return s.state !== 'done' || (s.details as SwitchDetails | null)?.settled !== true;
}

export async function recoverSwitch(ctx: SwitchContext): Promise<RecoveryOutcome | null> {
  const { store, run, app } = ctx;
  const pending = await latestSwitch(store.knex, run.id);
  if (!pending || !switchPending(pending)) return null;
  // A switch recorded by an older cloudshift, killed before it recorded its sides: they follow from its kind.
  const details = { ...switchSides(pending.kind), ...(pending.details as unknown as Partial<SwitchDetails>) } as SwitchDetails;
  if (pending.state === 'done') {
    await settleSwitch(ctx, pending.id, pending.kind, details, false);
    return null;
  }
  const finish = await shouldFinish(ctx, pending, details);
  if (finish) {
    await store.updateRun(run.id, { phase: pending.kind === 'cutover' ? 'cutover' : 'sync' });
    // A declarative switch is made to name `to` (and told: RELOAD); a command is not run again.
    if (app.kind !== 'command' && (pending.state !== 'switched' || details.kept)) await app.point(details.to);
    // The check after a failed switch may have fenced `to` before it was killed.
    await liftWriteFence(ctx.clients[details.to], ctx.book, details.to, ctx.plan.state.schema, ctx.plan.name);
    await app.release();
    await updateSwitch(store.knex, pending.id, { state: 'done', details: { ...details, recovered: 'finished' } });
    await store.appendEvent(
      run.id,
      `${pending.kind}:recovered`,
      `the interrupted ${pending.kind} ${pending.id} had reached its commit point: finished, the application is on ${describeSide(ctx, details.to)}`,
      { switchId: pending.id, outcome: 'finished' },
    );
    await settleSwitch(ctx, pending.id, pending.kind, { ...details, recovered: 'finished' }, false);
  } else {
    await undo(ctx, pending.kind, details, pending.state === 'fenced');
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

/**
 * Past the commit point (recorded `switched`, or the switch already names `to`), or kept because
 * the application wrote to `to`: finished. Otherwise undone, once it is known nothing reached `to`.
 */
async function shouldFinish(
  ctx: SwitchContext,
  pending: { id: string; state: string; kind: SwitchKind },
  details: SwitchDetails,
): Promise<boolean> {
  if (pending.state === 'switched' || details.kept) return true;
  if (details.undoing || !details.pointing) return false;
  const now = await ctx.app.current();
  // PgBouncer's databases file is the commit point: a restarted PgBouncer would route there.
  if (now === details.to) return true;
  try {
    return (await decideAfterPointing(ctx, pending.id, pending.kind, details)) === 'keep';
  } catch (err) {
    // The switch names the side left: the application never reached `to` through it. Undone,
    // recorded first, so a later recovery does not look again (and decide otherwise).
    if (now !== details.from || details.kept) throw err;
    details.undoing = true;
    await updateSwitch(ctx.store.knex, pending.id, { details: { ...details } });
    return false;
  }
}
