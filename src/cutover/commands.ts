/**
 * `cloudshift cutover` and `cloudshift rollback`, as library calls (the CLI only prints).
 */
import { requireRunDatabases } from '../engine/runDatabases.js';
import type pg from 'pg';
import { PreconditionError, StateConflictError } from '../errors.js';
import { displayName, quoteQualified } from '../plan/names.js';
import { migratedTables } from '../plan/defaults.js';
import { sequencesMissing } from '../source/listedSequences.js';
import type { LoadedPlan } from '../plan/parse.js';
import { resolveSecrets } from '../plan/secrets.js';
import { connect } from '../pg/connect.js';
import { StateStore } from '../state/store.js';
import { latestSwitch, listSwitches, syncRow } from '../state/sql/sync.js';
import { tablesVerifyFoundDiffering } from '../state/sql/verifyVerdicts.js';
import { mismatchedBatches } from '../state/sql/mismatchedBatches.js';
import { createContainerClient } from '../target/blob/client.js';
import { cleanupRun, type CleanupResult } from '../sync/cleanup.js';
import { delay } from '../embedded/util.js';
import { forwardCatchUp, reverseCatchUp } from './catchUp.js';
import { openSwitchContext, type OpenContextOptions } from './context.js';
import { recoverSwitch, switchPending } from './recover.js';
import { reverseStart, switchOver, type RecoveryOutcome, type SwitchDetails, type SwitchResult } from './switchOver.js';

export async function cutover(loaded: LoadedPlan, o: OpenContextOptions): Promise<SwitchResult> {
  const ctx = await openSwitchContext(loaded, o);
  try {
    const recovered = (await recoverSwitch(ctx)) ?? undefined;
    const run = (await ctx.store.getRun(ctx.run.id))!;
    if (run.phase === 'cutover') {
      if (recovered?.kind === 'cutover' && recovered.outcome === 'finished') return finishedByRecovery(run.id, recovered);
      throw new PreconditionError(`run ${run.id} is already cut over: the application uses the target`, {
        hint: '`cloudshift rollback` switches back; `cloudshift cleanup` ends the migration',
      });
    }
    if (run.phase !== 'sync') {
      throw new PreconditionError(`run ${run.id} is still copying (phase ${run.phase}): cutover needs the copy done and the sync running`, {
        hint: 'let `cloudshift run` finish the copy; it then keeps the target in sync',
      });
    }
    const mismatched = await mismatchedBatches(ctx.store.knex, run.id, 5);
    if (mismatched.length > 0) {
      throw new PreconditionError(
        `the copy is not verified: ${mismatched.length} batches mismatched or failed (${mismatched.map((m) => m.relation).join(', ')})`,
        { hint: 'run `cloudshift verify --repair`, then cut over' },
      );
    }
    const differing = await tablesVerifyFoundDiffering(ctx.store.knex, run.id);
    if (differing.length > 0) {
      throw new PreconditionError(
        `the last verify found the target differing from the source in ${differing.map((d) => `${d.table} (${d.differences} differences, ${d.at.toISOString()})`).join(', ')}`,
        { hint: 'run `cloudshift verify --repair` (or `--table` for those), then cut over' },
      );
    }
    const sync = await syncRow(ctx.store.knex, run.id);
    if (sync && sync.divergences > 0) {
      throw new PreconditionError(`live sync found ${sync.divergences} divergences (changes that matched no row on the target)`, {
        hint: 'run `cloudshift verify --repair`; a full verification that passes settles them',
      });
    }
    const missing = await sequencesMissing(ctx.clients.target, ctx.plan.sequences);
    if (missing.length > 0) {
      throw new PreconditionError(`sequence ${missing.map(displayName).join(', ')} of the plan is not on the target yet`, {
        hint: 'run `cloudshift run` with this plan (--force, if the plan changed since the run began): it makes the sequence, then cut over',
      });
    }
    const catchUp = await forwardCatchUp(ctx);
    const result = await switchOver(ctx, 'cutover', catchUp);
    return recovered ? { ...result, recovered } : result;
  } finally {
    await ctx.close();
  }
}

/** The interrupted switch of the same kind was finished by recovery: that is the switch asked for. */
function finishedByRecovery(runId: string, recovered: RecoveryOutcome): SwitchResult {
  return {
    runId,
    kind: recovered.kind,
    switched: true,
    pauseMs: null,
    fenceLsn: null,
    steps: [],
    quickCheck: [],
    syncElsewhere: false,
    recovered,
  };
}

export interface RollbackOptions extends OpenContextOptions {
  /** Before cutover: also remove what the migration created on the target. */
  dropTarget?: boolean;
}

export type RollbackResult =
  | ({ before: false } & SwitchResult)
  | { before: true; runId: string; cleanup: CleanupResult; droppedTables: string[]; removedBlobs: number };

export async function rollback(loaded: LoadedPlan, o: RollbackOptions): Promise<RollbackResult> {
  const peek = await peekRun(loaded, o);
  if (peek.phase === 'cutover' || peek.unfinishedSwitch) {
    const ctx = await openSwitchContext(loaded, o);
    try {
      const recovered = (await recoverSwitch(ctx)) ?? undefined;
      const run = (await ctx.store.getRun(ctx.run.id))!;
      if (recovered?.kind === 'rollback' && recovered.outcome === 'finished')
        return { before: false, ...finishedByRecovery(run.id, recovered) };
      if (run.phase === 'cutover') {
        if (o.dropTarget) throw new PreconditionError('--drop-target is refused after cutover: the target is where the application writes');
        const cut = (await listSwitches(ctx.store.knex, run.id)).filter((s) => s.kind === 'cutover' && s.state === 'done').pop();
        const from = reverseStart(cut?.details as SwitchDetails | undefined);
        const result = await switchOver(ctx, 'rollback', reverseCatchUp(ctx, from));
        return { before: false, ...(recovered ? { ...result, recovered } : result) };
      }
    } finally {
      await ctx.close();
    }
  }
  return abortBeforeCutover(loaded, o);
}

async function peekRun(loaded: LoadedPlan, o: OpenContextOptions): Promise<{ phase: string; unfinishedSwitch: boolean }> {
  const secrets = resolveSecrets(loaded, o.env, ['state']);
  const store = await StateStore.open({ connectionString: secrets.state, schema: loaded.plan.state.schema });
  try {
    await store.migrate();
    const run = await store.getActiveRun(loaded.plan.name);
    if (!run) throw new PreconditionError(`plan ${loaded.plan.name} has no active run: there is nothing to roll back`);
    const last = await latestSwitch(store.knex, run.id);
    return { phase: run.phase, unfinishedSwitch: last !== null && switchPending(last) };
  } finally {
    await store.close();
  }
}

/**
 * Rollback before cutover (exported for the test of its look under the lock): the application never left the source. The sync stops (a syncing
 * `cloudshift run` sees the run aborted and ends), every slot and publication is dropped, and the
 * source is left untouched. With --drop-target the migrated tables and the uploaded documents are
 * removed from the target too.
 */
export async function abortBeforeCutover(loaded: LoadedPlan, o: RollbackOptions): Promise<RollbackResult> {
  const { plan } = loaded;
  const secrets = resolveSecrets(loaded, o.env, ['source', 'target', 'state', 'blobConnectionString', 'blobSas']);
  const store = await StateStore.open({ connectionString: secrets.state, schema: plan.state.schema });
  let runId: string;
  let blobNames: string[] = [];
  try {
    const run = (await store.getActiveRun(plan.name))!;
    runId = run.id;
    // Not while a cutover runs (it would switch a run this ends); held until the store closes.
    await store.lockSwitch(run);
    // Looked at again under the lock: a cutover that finished (or was left unfinished) since the
    // look before it must be rolled back as one, never ended with the target dropped.
    const now = (await store.getRun(run.id))!;
    const last = await latestSwitch(store.knex, run.id);
    if (now.phase === 'cutover' || (last && switchPending(last))) {
      throw new StateConflictError(
        `a cutover of run ${run.id} ${now.phase === 'cutover' ? 'finished' : 'was left unfinished'} while this rollback began: nothing was changed`,
        {
          hint: `run \`cloudshift rollback\` again: it rolls the cutover back (or settles it first)`,
        },
      );
    }
    // Before anything is ended or dropped: never the tables or the slot of other databases.
    await requireRunDatabases(store, run, secrets, true);
    await store.updateRun(run.id, { status: 'aborted' });
    await store.appendEvent(
      run.id,
      'rollback:before-cutover',
      'rollback before cutover: the sync stops and the application stays on the source',
      {
        dropTarget: o.dropTarget === true,
      },
    );
    // A syncing `cloudshift run` polls the run once per heartbeat and lets go of it.
    for (let i = 0; i < 100 && !(await store.tryLock(`cloudshift.run:${run.id}`)); i++) await delay(100);
    await store.unlock(`cloudshift.run:${run.id}`);
    if (o.dropTarget) {
      const { rows } = await store.pool.query<{ blob_name: string }>(
        `SELECT blob_name FROM ${quoteQualified({ schema: store.schema, name: 'documents' })} WHERE run_id = $1`,
        [run.id],
      );
      blobNames = rows.map((r) => r.blob_name);
      // Blobs a killed sync let go of and did not get to remove (a state store older than that
      // record has none).
      const released = quoteQualified({ schema: store.schema, name: 'released_blobs' });
      const { rows: exists } = await store.pool.query<{ t: string | null }>(`SELECT to_regclass($1)::text AS t`, [released]);
      if (exists[0]?.t) {
        const { rows: waiting } = await store.pool.query<{ name: string }>(`SELECT name FROM ${released} WHERE run_id = $1`, [run.id]);
        for (const r of waiting) blobNames.push(r.name);
      }
    }
  } finally {
    await store.close();
  }
  const cleanup = await cleanupRun(loaded, o.env);
  const droppedTables: string[] = [];
  let removedBlobs = 0;
  if (o.dropTarget) {
    const target: pg.Client = await connect({ role: 'target', connectionString: secrets.target });
    try {
      for (const name of migratedTables(plan)) {
        const { rows } = await target.query<{ t: string | null }>(`SELECT to_regclass($1)::text AS t`, [quoteQualified(name)]);
        if (rows[0]?.t === null) continue;
        await target.query(`DROP TABLE ${quoteQualified(name)} CASCADE`);
        droppedTables.push(displayName(name));
      }
    } finally {
      await target.end();
    }
    if (plan.target.blob && blobNames.length > 0) {
      const container = createContainerClient(plan.target.blob, {
        connectionString: secrets.blobConnectionString,
        sas: secrets.blobSas,
      });
      for (const name of blobNames) if ((await container.getBlobClient(name).deleteIfExists()).succeeded) removedBlobs += 1;
    }
  }
  return { before: true, runId, cleanup, droppedTables, removedBlobs };
}

/** Finishes or undoes an interrupted cutover or rollback, if there is one (`cloudshift run` calls it first). */
export async function recoverPendingSwitch(loaded: LoadedPlan, o: OpenContextOptions): Promise<RecoveryOutcome | null> {
  if (loaded.plan.sync.mode !== 'logical' || !loaded.plan.cutover.switch) return null;
  // No active run: nothing to recover. Any other failure (the state store unreachable) is not "nothing".
  const peek = await peekRun(loaded, o).catch((err: unknown) => {
    if (err instanceof PreconditionError) return null;
    throw err;
  });
  if (!peek?.unfinishedSwitch) return null;
  const ctx = await openSwitchContext(loaded, o);
  try {
    return await recoverSwitch(ctx);
  } finally {
    await ctx.close();
  }
}
