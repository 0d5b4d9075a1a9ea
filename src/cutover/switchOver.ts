/**
 * The switch protocol, the same in both directions (DESIGN.md, "Cutover through PgBouncer"):
 * cutover moves the application from the source to the target, rollback moves it back.
 *
 *   catch up (lag under maxLag) → PAUSE (bounded) → write fence on the side left → fence
 *   position → drain until applied → sequences → large objects (cutover) → quick check →
 *   prepare the opposite stream → point the switch at the other side → RESUME
 *
 * Invariants:
 * - the switch's state is recorded at each step (the `switches` row), so a crash at any moment is
 *   finished or undone by the next command (recover.ts); with PgBouncer the databases file is the
 *   commit point: it names the new side only once that side is complete;
 * - any failure, or the pause budget (maxPause) running out, before that point resumes on the
 *   side the application was on, unchanged (its write fence removed, the slot made for the
 *   opposite stream dropped);
 * - the opposite stream's slot is created inside the pause, after the drain: every write the
 *   application makes on the new side is in it, and nothing the drain applied is.
 */
import { CloudshiftError, ConnectError, ExitCode, PreconditionError, messageOf } from '../errors.js';
import { isConnectionLost } from '../pg/transient.js';
import { readSequences, setSequences } from '../target/postgres/sequences.js';
import { ensurePublication, dropObject, emitMessage, slotHasChanges, takeHorizon, type Side } from '../sync/objects.js';
import { forwardObjects } from '../sync/forward.js';
import { createPlainSlot, reverseObjects, SlotWaitError } from '../sync/reverse.js';
import { documentSink } from '../sync/documents.js';
import { documentsTarget } from '../sync/forward.js';
import { formatLsn, parseLsn, type Lsn } from '../sync/lsn.js';
import { MESSAGE_PREFIX } from '../sync/syncLoop.js';
import {
  latestSwitch,
  loHorizon,
  restartSyncAt,
  saveLoHorizon,
  startSwitch,
  syncRow,
  updateSwitch,
  type SwitchKind,
} from '../state/sql/sync.js';
import { delay } from '../embedded/util.js';
import type { CatchUp } from './catchUp.js';
import { describeSide, type SwitchContext } from './context.js';
import { hasLargeObjectDocuments, reconcileLargeObjects } from './largeObjects.js';
import { quickCheck, type QuickCheckResult } from './quickCheck.js';
import { createWriteFence, liftWriteFence } from './writeFence.js';
import { startGuard } from './guard.js';
import type { ServerConnection } from './pgbouncerAdmin.js';

export interface SwitchResult {
  runId: string;
  kind: SwitchKind;
  switched: boolean;
  /** The measured write pause (PAUSE sent → RESUME answered), ms. */
  pauseMs: number | null;
  fenceLsn: string | null;
  /** Why it did not switch. */
  reason?: string;
  steps: Array<{ step: string; ms: number }>;
  quickCheck: QuickCheckResult[];
  /** Another `cloudshift run` was syncing and applied up to the fence. */
  syncElsewhere: boolean;
  recovered?: RecoveryOutcome;
}

export interface RecoveryOutcome {
  switchId: string;
  kind: SwitchKind;
  outcome: 'finished' | 'undone';
}

/** How long the stream may take to get under maxLag before the pause. */
const CATCH_UP_TIMEOUT_MS = 120_000;
/** How long it may then take to get the lag down to a tenth of the pause budget. */
const CLOSE_IN_MS = 5_000;

/** A cutover moves the application from the source to the target; a rollback, back. */
export function switchSides(kind: SwitchKind): { from: Side; to: Side } {
  const from: Side = kind === 'cutover' ? 'source' : 'target';
  return { from, to: otherSide(from) };
}

export interface SwitchDetails {
  from: Side;
  to: Side;
  switch: 'pgbouncer' | 'command' | 'arm';
  /** The opposite stream's slot was made (its consistent point). */
  nextFrom?: string;
  /** The write fence on the side switched to (left by an earlier switch) was removed. */
  toFenceDropped?: boolean;
  /** The switch was told to point at `to` (command switch: the command may have run). */
  pointing?: boolean;
  reason?: string;
  recovered?: 'finished' | 'undone';
  /** After `done`: the stream left behind was dropped (settleSwitch). */
  settled?: boolean;
  /** A switch that failed once pointing: the application had written to `to`, so it is kept. */
  kept?: boolean;
  /** A switch that failed once pointing: nothing reached `to`, so it is being undone. */
  undoing?: boolean;
  blockers?: string[];
  steps?: Array<{ step: string; ms: number }>;
}

export function otherSide(side: Side): Side {
  return side === 'source' ? 'target' : 'source';
}

class Abort extends Error {}

/** A switch that failed and could not be undone completely; it stays open for recovery. */
export class SwitchUndoError extends CloudshiftError {
  constructor(message: string, options: { hint: string }) {
    super('CS_SWITCH_UNDO', ExitCode.failed, message, options);
  }
}

export async function switchOver(ctx: SwitchContext, kind: SwitchKind, catchUp: CatchUp): Promise<SwitchResult> {
  const { store, run, plan, clients, app, book } = ctx;
  const { from, to } = switchSides(kind);
  const tables = ctx.tasks.map((t) => t.name);
  const details: SwitchDetails = { from, to, switch: app.kind };
  const row = await startSwitch(store.knex, run.id, kind, ctx.me, { ...details });
  const steps: Array<{ step: string; ms: number }> = [];
  let mark = performance.now();
  const step = async (name: string) => {
    const now = performance.now();
    steps.push({ step: name, ms: Math.round(now - mark) });
    mark = now;
    await ctx.hooks.cutoverStep?.(name);
  };
  const result = (fields: Partial<SwitchResult>): SwitchResult => ({
    runId: run.id,
    kind,
    switched: false,
    pauseMs: null,
    fenceLsn: null,
    steps,
    quickCheck: [],
    syncElsewhere: catchUp.elsewhere,
    ...fields,
  });
  const abandon = async (reason: string, extra: Partial<SwitchDetails> = {}) => {
    Object.assign(details, { reason, steps, ...extra });
    await updateSwitch(store.knex, row.id, { state: 'aborted', details: { ...details } });
    await store.appendEvent(run.id, `${kind}:aborted`, `${kind} aborted, the application stays on ${describeSide(ctx, from)}: ${reason}`, {
      switchId: row.id,
      reason,
      steps,
    });
  };

  // 1. Before the pause: the opposite stream's publication, the lag under maxLag, large objects.
  const lo = kind === 'cutover' && hasLargeObjectDocuments(ctx.tasks);
  const docs = documentsTarget(store, run.id, plan, ctx.secrets, ctx.tasks);
  const sinkFor = (signal?: AbortSignal) => (docs ? documentSink(docs.container, clients.source, docs.store, signal) : null);
  let horizon: string | null = null;
  try {
    const next = kind === 'cutover' ? reverseObjects(plan).publication : forwardObjects(plan).publication;
    await ensurePublication(clients[to], book, next, tables);
    ctx.say(
      `waiting for the ${kind === 'cutover' ? 'sync' : 'reverse sync'} to get under ${plan.cutover.maxLagMs} ms of lag${catchUp.elsewhere ? ' (applied by the `cloudshift run` syncing this plan)' : ''}`,
    );
    await catchUp.waitLag(plan.cutover.maxLagMs, CATCH_UP_TIMEOUT_MS);
    // Under maxLag is the precondition; what is still unapplied at PAUSE is applied inside the
    // pause, so give the stream a few seconds to get closer first.
    const close = Math.max(50, Math.min(plan.cutover.maxLagMs, plan.cutover.maxPauseMs / 10));
    await catchUp.waitLag(close, CLOSE_IN_MS).catch(() => undefined);
    const sink = lo ? sinkFor() : null;
    if (sink) {
      horizon = await takeHorizon(clients.source);
      const n = await reconcileLargeObjects(clients.source, sink, ctx.tasks, (await loHorizon(store.knex, run.id)) ?? '3');
      await saveLoHorizon(store.knex, run.id, horizon);
      if (n > 0) ctx.say(`${n} large-object documents changed in place: uploaded again`);
    }
    await step('caught-up');
  } catch (err) {
    await catchUp.stop().catch(() => undefined);
    await abandon(messageOf(err));
    throw err;
  }

  // 2. The pause.
  ctx.say(`pausing writes (${app.kind})`);
  const guard = startGuard(ctx.loaded.file, ctx.env);
  let settled = false;
  try {
    const out = await paused(ctx, kind, catchUp, { row, details, step, steps, result, abandon, from, to, sinkFor, horizon });
    settled = true;
    return out;
  } catch (err) {
    // Settled if it was undone and recorded so; otherwise (a failure after the commit point, an
    // undo left unfinished) PgBouncer may still be paused or a side fenced: the guard sees to it.
    const state = await latestSwitch(store.knex, run.id).then(
      (s) => (s?.id === row.id ? s.state : null),
      () => null,
    );
    settled = state === 'done' || state === 'aborted';
    throw err;
  } finally {
    if (settled) guard.release();
    else guard.leave();
  }
}

interface PauseScope {
  row: { id: string };
  details: SwitchDetails;
  step: (name: string) => Promise<void>;
  steps: Array<{ step: string; ms: number }>;
  result: (fields: Partial<SwitchResult>) => SwitchResult;
  abandon: (reason: string, extra?: Partial<SwitchDetails>) => Promise<void>;
  from: Side;
  to: Side;
  /** Uploads large-object documents again (null: none); `signal` ends the uploads. */
  sinkFor: (signal?: AbortSignal) => ReturnType<typeof documentSink> | null;
  /** Where large objects were last reconciled (before the pause); null: no large-object documents. */
  horizon: string | null;
}

/** From PAUSE to RESUME (or the undo), under the guard. */
async function paused(ctx: SwitchContext, kind: SwitchKind, catchUp: CatchUp, scope: PauseScope): Promise<SwitchResult> {
  const { store, run, plan, clients, app, book } = ctx;
  const { row, details, step, steps, result, abandon, from, to, sinkFor, horizon } = scope;
  const tables = ctx.tasks.map((t) => t.name);
  const maxPause = plan.cutover.maxPauseMs;
  const pauseStart = performance.now();
  const deadline = pauseStart + maxPause;
  const budget = (what: string) => {
    if (performance.now() > deadline) throw new Abort(`the pause budget (maxPause ${maxPause} ms) ran out ${what}`);
  };
  const paused = await app.pause(Math.floor(maxPause / 2)).catch(async (err: unknown) => {
    // The switch is left open (started): the guard, or the next command, resumes PgBouncer.
    await catchUp.stop().catch(() => undefined);
    throw err;
  });
  if (!paused.paused) {
    await catchUp.stop().catch(() => undefined);
    const blockers = await describeBlockers(ctx, from, paused.busy);
    const reason = `PAUSE could not finish within ${Math.floor(maxPause / 2)} ms: ${blockers.length ? blockers.join('; ') : 'server connections stayed busy (session pooling waits for clients to disconnect)'}; resumed on ${describeSide(ctx, from)}`;
    await abandon(reason, { blockers });
    return result({ reason });
  }
  let fenceLsn: Lsn | null = null;
  let checks: QuickCheckResult[] = [];
  try {
    await updateSwitch(store.knex, row.id, { state: 'paused' });
    await step('paused');

    // 3. Fence: the side left refuses writes that bypass the switch; then its WAL position.
    await clients[from].query(`SET lock_timeout = ${Math.max(1, Math.floor(deadline - performance.now()))}`);
    await createWriteFence(clients[from], book, from, plan.state.schema, plan.name, tables, describeSide(ctx, to));
    await clients[from].query(`SET lock_timeout = 0`);
    await step('write-fenced');
    fenceLsn = await emitMessage(clients[from], MESSAGE_PREFIX, { kind: 'fence', at: Date.now(), switchId: row.id });
    await updateSwitch(store.knex, row.id, { state: 'fenced', fence_lsn: formatLsn(fenceLsn) });
    await step('fenced');

    // 4. Drain: everything up to the fence applied on the other side.
    const at = await catchUp.appliedNow();
    const behind = at === null ? null : Number(fenceLsn - at);
    if (!(await catchUp.waitApplied(fenceLsn, deadline))) {
      throw new Abort(
        `the pause budget (maxPause ${maxPause} ms) ran out before the stream applied up to the fence ${formatLsn(fenceLsn)}`,
      );
    }
    await catchUp.stop();
    // The cutover began with none (checked before); one found while catching up or draining (a
    // change that matched no row on the target) means the target differs: it is not switched in.
    const diverged = kind === 'cutover' ? ((await syncRow(store.knex, run.id))?.divergences ?? 0) : 0;
    if (diverged > 0)
      throw new Abort(
        `live sync found ${diverged} divergence${diverged === 1 ? '' : 's'} while catching up (changes that matched no row on the target); run \`cloudshift verify --repair\`, then cut over`,
      );
    await step('drained');
    if (behind !== null) steps[steps.length - 1]!.step = `drained (${Math.max(0, behind)} bytes of WAL behind at the fence)`;

    // 5. Sequences, large objects, the quick check.
    await setSequences(clients[to], await readSequences(clients[from], tables, ctx.plan.sequences));
    await step('sequences');
    if (horizon !== null) {
      const signal = AbortSignal.timeout(Math.max(1, Math.floor(deadline - performance.now())));
      try {
        await reconcileLargeObjects(clients.source, sinkFor(signal)!, ctx.tasks, horizon);
      } catch (err) {
        if (signal.aborted)
          throw new Abort(`the pause budget (maxPause ${maxPause} ms) ran out uploading large-object documents changed in place`);
        throw err;
      }
      await step('large-objects');
    }
    try {
      checks = await quickCheck(clients.source, clients.target, ctx.tasks, deadline - performance.now());
    } catch (err) {
      if ((err as { code?: string }).code === '57014')
        throw new Abort(`the pause budget (maxPause ${maxPause} ms) ran out in the quick check of the newest rows`);
      throw err;
    }
    const differing = checks.filter((c) => !c.equal);
    if (differing.length > 0) {
      throw new Abort(
        `quick check: the newest rows of ${differing.map((d) => d.table).join(', ')} differ between source and target after the drain`,
      );
    }
    await step('checked');
    budget('before the opposite stream was prepared');

    // 6. The opposite stream starts here: every write on the new side from now on is in it.
    if (kind === 'cutover') {
      details.nextFrom = formatLsn(await createPlainSlot(clients.target, book, reverseObjects(plan).slot, deadline - performance.now()));
    } else {
      const at = await createPlainSlot(clients.source, book, forwardObjects(plan).slot, deadline - performance.now());
      details.nextFrom = formatLsn(at);
      await restartSyncAt(store.knex, run.id, at);
      await saveLoHorizon(store.knex, run.id, await takeHorizon(clients.source));
    }
    await updateSwitch(store.knex, row.id, { details: { ...details } });
    await step('prepared');
    budget('before the switch');

    // 7. The commit point: the switch names the other side; only if writes are still held back
    //    (a PgBouncer restarted meanwhile lets them through to the side left), and only while this
    //    process holds the switch lock (without it, another command may be undoing this switch).
    if (!(await app.stillPaused())) throw new Abort('the switch is no longer paused (PgBouncer restarted during the pause?)');
    const lockLost = await ctx.switchLockLost();
    if (lockLost !== null)
      throw new Abort(
        `the state store session holding the switch lock ended (${lockLost}): another command may be recovering this ${kind}`,
      );
    // Recorded before the lift: an undo after a crash in between fences `to` again (which is
    // harmless if the lift never happened), rather than leave it open.
    details.toFenceDropped = true;
    await updateSwitch(store.knex, row.id, { details: { ...details } });
    await liftWriteFence(clients[to], book, to, plan.state.schema, plan.name);
    details.pointing = true;
    await updateSwitch(store.knex, row.id, { details: { ...details } });
    ctx.say(`pointing the application at ${describeSide(ctx, to)}`);
    await app.point(to, () => step('named'));
  } catch (err) {
    // An abort is an expected outcome (reported, exit 1); anything else is rethrown after the undo.
    const aborted = err instanceof Abort || err instanceof SlotWaitError;
    const reason = aborted ? err.message : `${kind} failed: ${messageOf(err)}`;
    await catchUp.stop().catch(() => undefined);
    // A switch that failed once it began pointing may have let writes through to `to` (a
    // command that switched the application, then failed; a PgBouncer restarted before RELOAD,
    // reading the new databases file): then the switch is kept, with those writes.
    if (details.pointing) {
      let decision: 'keep' | 'undo';
      try {
        decision = await decideAfterPointing(ctx, row.id, kind, details);
      } catch (checkErr) {
        // Unknown (or writes found but not recorded), and the switch may name `to`: left open for
        // the next command, which decides the same way.
        if (details.kept || (await app.current().catch(() => 'unknown' as const)) !== from) {
          throw new SwitchUndoError(
            `${reason}; whether the application wrote to ${describeSide(ctx, to)} meanwhile could not be checked (${messageOf(checkErr)}): the ${kind} is left open`,
            {
              hint: `run \`cloudshift ${kind}\` again once both servers answer: it keeps the ${kind} if the application wrote there, or undoes it`,
            },
          );
        }
        // The switch still names the side left, so the application never reached `to` through it:
        // undone, recorded first (a state store that cannot record it leaves the switch open).
        decision = 'undo';
        details.undoing = true;
        await updateSwitch(store.knex, row.id, { details: { ...details } });
      }
      if (decision === 'keep') {
        // A declarative switch (PgBouncer, ARM) is made to name `to`; a command is not run again.
        // If that fails, writes resume all the same (on `from` they fail, fenced): never left paused.
        const pointed =
          app.kind === 'command'
            ? null
            : await app.point(to).then(
                () => null,
                (e: unknown) => e,
              );
        await liftWriteFence(clients[to], book, to, plan.state.schema, plan.name);
        const pauseMs = await complete(() => app.release());
        const kept = `the application had already written to ${describeSide(ctx, to)}, so the ${kind} is kept: ${describeSide(ctx, to)} takes the writes and ${describeSide(ctx, from)} is read-only`;
        const hint = `point every part of the application at ${describeSide(ctx, to)} (the switch did not finish${pointed === null ? '' : `; pointing it again failed too: ${messageOf(pointed)}`}), or run \`cloudshift ${kind === 'cutover' ? 'rollback' : 'cutover'}\`, which takes those writes back`;
        await store.appendEvent(run.id, `${kind}:kept`, `the switch failed (${messageOf(err)}), but ${kept}; ${hint}`, {
          switchId: row.id,
        });
        throw new CloudshiftError('CS_SWITCH_KEPT', ExitCode.failed, `${reason}; ${kept} (write pause ${pauseMs} ms)`, {
          cause: err,
          hint,
        });
      }
    }
    try {
      await undo(ctx, kind, details, fenceLsn !== null);
    } catch (undoErr) {
      // Left open (not aborted): the next command, or the guard, finishes the undo.
      throw new SwitchUndoError(
        `${reason}; undoing it did not finish: ${messageOf(undoErr)} (the application was resumed on ${describeSide(ctx, from)} if that step could run)`,
        { hint: `run \`cloudshift ${kind}\` again once both servers answer: it finishes the undo first` },
      );
    }
    const resumedAfter = Math.round(performance.now() - pauseStart);
    const undone = `${reason}; undone: the application resumed on ${describeSide(ctx, from)} after ${resumedAfter} ms`;
    await abandon(undone);
    // Not a planned abort: the command fails, saying where the application is, with the cause's code.
    if (!aborted) {
      const options = { cause: err, hint: `fix the cause above, then run \`cloudshift ${kind}\` again` };
      if (err instanceof CloudshiftError)
        throw new CloudshiftError(err.code, err.exitCode, undone, { ...options, hint: err.hint ?? options.hint });
      // A server lost mid-pause exits as any lost connection does (3), the switch command's failure with its own code.
      if (isConnectionLost(err)) throw new ConnectError(undone, options);
      throw new CloudshiftError('CS_SWITCH_FAILED', ExitCode.failed, undone, options);
    }
    return result({ reason, fenceLsn: fenceLsn === null ? null : formatLsn(fenceLsn), quickCheck: checks });
  }
  const pauseMs = await complete(() => app.resume());
  return result({ switched: true, pauseMs, fenceLsn: formatLsn(fenceLsn!), quickCheck: checks });

  /** Past the commit point: recorded as switched, RESUME (`resume`), done, then the stream left behind goes. */
  async function complete(resume: () => Promise<unknown>): Promise<number> {
    // The application is pointed at `to` now: the pause ends even if the state store cannot
    // record it (the next command, or the guard, finishes the switch from where it points).
    let unrecorded: unknown = null;
    try {
      await updateSwitch(store.knex, row.id, { state: 'switched' });
      const phase = kind === 'cutover' ? 'cutover' : 'sync';
      await store.updateRun(run.id, { phase });
      await store.appendEvent(run.id, 'run:phase', `phase ${phase}`);
    } catch (err) {
      unrecorded = err;
    }
    await step('switched');

    // 8. RESUME: the pause ends.
    await resume();
    if (unrecorded !== null) throw unrecorded;
    const pauseMs = Math.round(performance.now() - pauseStart);
    await step('resumed');
    details.steps = steps;
    await updateSwitch(store.knex, row.id, { state: 'done', pause_ms: pauseMs, details: { ...details } });
    await store.appendEvent(
      run.id,
      `${kind}:done`,
      `${kind === 'cutover' ? 'cut over' : 'rolled back'} to ${describeSide(ctx, to)} with a write pause of ${pauseMs} ms (fence ${formatLsn(fenceLsn!)})`,
      { switchId: row.id, pauseMs, fenceLsn: formatLsn(fenceLsn!), steps, quickCheck: checks },
    );
    await ctx.hooks.cutoverStep?.('done');
    // Done either way: what is left behind is dropped by the next command (recover.ts).
    await settleSwitch(ctx, row.id, kind, details, catchUp.elsewhere).catch((err: unknown) =>
      ctx.say(
        `warning: the ${kind} is done, but dropping the stream it left failed (${messageOf(err)}); the next cloudshift command drops it`,
      ),
    );
    return pauseMs;
  }
}

/** How long the check after a failed switch waits to fence `to` (a writer there holds it up). */
const CHECK_LOCK_MS = 2000;

/**
 * A switch that began pointing and then failed (or was killed): kept if the application already
 * wrote to `to`, undone otherwise. Decided once and recorded before anything is done about it, so
 * a later recovery carries out the same decision (an undo drops the slot this looks into). Throws
 * when it cannot tell.
 */
export async function decideAfterPointing(
  ctx: SwitchContext,
  switchId: string,
  kind: SwitchKind,
  details: SwitchDetails,
): Promise<'keep' | 'undo'> {
  if (details.kept) return 'keep';
  if (details.undoing) return 'undo';
  const wrote = await wroteToNewSide(ctx, kind, details);
  Object.assign(details, wrote ? { kept: true } : { undoing: true });
  await updateSwitch(ctx.store.knex, switchId, { details: { ...details } });
  return wrote ? 'keep' : 'undo';
}

/**
 * Whether a write reached `to` since the opposite stream's slot was made (before pointing): the
 * slot holds every write made there. `to` is fenced first, so none can arrive after the look; a
 * fence held up for CHECK_LOCK_MS (a transaction writing there) counts as a write. `to` is left
 * fenced: the keep lifts the fence once the decision is recorded, the undo needs it.
 */
async function wroteToNewSide(ctx: SwitchContext, kind: SwitchKind, details: SwitchDetails): Promise<boolean> {
  if (details.nextFrom === undefined) return false;
  const { clients, book, plan } = ctx;
  const { from, to } = details;
  const client = clients[to];
  const tables = ctx.tasks.map((t) => t.name);
  await client.query(`SET lock_timeout = ${CHECK_LOCK_MS}`);
  try {
    await createWriteFence(client, book, to, plan.state.schema, plan.name, tables, describeSide(ctx, from));
  } catch (err) {
    if ((err as { code?: string }).code === '55P03') return true;
    throw err;
  } finally {
    await client.query('RESET lock_timeout').catch(() => undefined);
  }
  const next = kind === 'cutover' ? reverseObjects(plan) : forwardObjects(plan);
  return slotHasChanges(client, next.slot.name, next.publication.name);
}

/**
 * Back to `from`, unchanged: the switch names `from` again, its write fence goes, the slot made
 * for the opposite stream is dropped, a fence removed from `to` comes back, and writes resume.
 * Once the application points at `from`, every step is tried whatever the others did (the side
 * being returned to must not stay fenced and PgBouncer must not stay paused because `to`'s server
 * went away); the first failure is thrown after, and the switch stays open for the next command
 * (recover.ts) to finish the undo. `fenced`: the switch got past its fence, so the opposite
 * stream's slot may exist though it is not recorded yet (killed while it was being made).
 */
export async function undo(ctx: SwitchContext, kind: SwitchKind, details: SwitchDetails, fenced: boolean): Promise<void> {
  const { clients, app, book, plan } = ctx;
  const { from, to } = details;
  const tables = ctx.tasks.map((t) => t.name);
  // Pointed back whatever the switch names now: a PgBouncer whose databases file names `from` may
  // still route to `to` (an undo killed between writing the file and its RELOAD). Idempotent.
  if (details.pointing) await app.point(from);
  const failures: unknown[] = [];
  const attempt = async (work: () => Promise<unknown>) => {
    await work().catch((err: unknown) => failures.push(err));
  };
  if (details.toFenceDropped)
    await attempt(() => createWriteFence(clients[to], book, to, plan.state.schema, plan.name, tables, describeSide(ctx, from)));
  if (details.nextFrom !== undefined || fenced) {
    const slot = kind === 'cutover' ? reverseObjects(plan).slot : forwardObjects(plan).slot;
    await attempt(() => dropObject(clients[slot.side], book, slot));
  }
  await attempt(() => liftWriteFence(clients[from], book, from, plan.state.schema, plan.name));
  await attempt(() => app.release());
  if (failures.length > 0) throw failures[0];
}

/**
 * afterSwitch, then recorded (`settled`): a switch killed before this was recorded is settled by
 * the next command (recover.ts), so no slot is left holding WAL on the side left.
 */
export async function settleSwitch(
  ctx: SwitchContext,
  switchId: string,
  kind: SwitchKind,
  details: SwitchDetails,
  syncElsewhere: boolean,
): Promise<void> {
  await afterSwitch(ctx, kind, syncElsewhere);
  await updateSwitch(ctx.store.knex, switchId, { details: { ...details, settled: true } });
}

/**
 * After a switch: the stream just drained is not needed any more (its slot would hold WAL on the
 * side left). A `cloudshift run` that was syncing stops by itself within a heartbeat (it sees the
 * run's phase); its slot is dropped once it let go, or taken from it after a few seconds.
 */
async function afterSwitch(ctx: SwitchContext, kind: SwitchKind, syncElsewhere: boolean): Promise<void> {
  const { clients, book, plan, store, run } = ctx;
  if (kind === 'cutover') {
    if (syncElsewhere) {
      for (let i = 0; i < 50 && !(await store.tryLock(`cloudshift.run:${run.id}`)); i++) await delay(100);
    }
    const fwd = forwardObjects(plan);
    await dropObject(clients.source, book, fwd.slot);
    await dropObject(clients.source, book, fwd.publication);
  } else {
    const rev = reverseObjects(plan);
    await dropObject(clients.target, book, rev.slot);
    await dropObject(clients.target, book, rev.publication);
    await dropObject(clients.source, book, rev.origin);
  }
}

/** Names the sessions that kept PAUSE from finishing (never their queries: patient data). */
async function describeBlockers(ctx: SwitchContext, side: Side, busy: ServerConnection[]): Promise<string[]> {
  const pids = busy.map((b) => b.remotePid).filter((p): p is number => p !== null);
  if (pids.length === 0) return [];
  const { rows } = await ctx.clients[side].query<{
    pid: number;
    usename: string | null;
    application_name: string | null;
    state: string | null;
    xact_ms: string | null;
  }>(
    `SELECT pid, usename, application_name, state,
            (extract(epoch FROM clock_timestamp() - xact_start) * 1000)::bigint::text AS xact_ms
       FROM pg_stat_activity WHERE pid = ANY($1::int[])`,
    [pids],
  );
  return rows.map(
    (r) =>
      `session pid ${r.pid} (user ${r.usename ?? '?'}${r.application_name ? `, application "${r.application_name}"` : ''}) is ${r.state ?? 'busy'}${r.xact_ms ? `, in a transaction open for ${(Number(r.xact_ms) / 1000).toFixed(1)} s` : ''}`,
  );
}

/** Rollback needs the reverse slot the cutover made: where its stream starts. */
export function reverseStart(details: SwitchDetails | undefined): Lsn {
  if (!details?.nextFrom) {
    throw new PreconditionError('the cutover recorded no reverse replication slot: rollback cannot replay the writes made on the target', {
      hint: 'the reverse slot is made inside the cutover pause; a cutover from an older cloudshift cannot be rolled back',
    });
  }
  return parseLsn(details.nextFrom);
}
