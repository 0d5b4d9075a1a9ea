/**
 * `cloudshift run` as a runbook: a short list of named, awaited steps (ghostferry's Run()). Each
 * step is idempotent and recorded as the run's phase, so a rerun after a crash or Ctrl-C resumes
 * at the step it stopped in. The comment at each step says what the operator may do there.
 */
import type pg from 'pg';
import type { LoadedPlan } from '../plan/parse.js';
import { resolveSecrets, type Env } from '../plan/secrets.js';
import { connect, serverVersion } from '../pg/connect.js';
import { StateStore } from '../state/store.js';
import { whoAmI, workerId } from '../state/who.js';
import { handleExistingData } from '../target/postgres/existingData.js';
import { readSequences, setSequences } from '../target/postgres/sequences.js';
import {
  applyFinal,
  applyListedSequences,
  applyNewPartitions,
  applyPostData,
  applyPreData,
  planSelections,
  readSourceSchema,
  skippedLines,
} from '../target/postgres/schema/index.js';
import { requireListedSequences } from '../source/listedSequences.js';
import { copyPhase, type CopyPhaseResult } from './copyPhase.js';
import { emitter, type EventSink } from './events.js';
import type { EngineHooks } from './hooks.js';
import { planBatches, tableTasks } from './planBatches.js';
import { openRun, PHASES, type Phase } from './runState.js';
import { settleRunDatabases } from './runDatabases.js';
import { databaseIdentity } from '../pg/identity.js';
import { exportSnapshot } from './snapshot.js';
import { partlyCopied, recopyKeyless } from './recopyKeyless.js';
import { restoreForeignKeys, setAsideForeignKeys } from '../target/postgres/foreignKeys.js';
import { displayName } from '../plan/names.js';
import { prepareForwardSync, runForwardSync, type StopReason } from '../sync/forward.js';
import type { SyncLoopResult } from '../sync/syncLoop.js';
import { ensureReplicaIdentity } from '../sync/replicaIdentity.js';
import { recoverPendingSwitch } from '../cutover/commands.js';
import { heartbeat, openBatches, registerWorker, releaseClaimsOf, releaseDeadClaims, takeWorkerId } from '../state/sql/workers.js';
import { workAsWorker } from './worker.js';
import { delay, settlesWithin } from '../embedded/util.js';
import { formatLsn } from '../sync/lsn.js';
import { watchSlot as startSlotWatch, type SlotWatch } from '../sync/slotWatch.js';
import { syncRow } from '../state/sql/sync.js';
import { summarize, type RunSummary } from './summary.js';
import { ConnectError, messageOf, PreconditionError, StateConflictError } from '../errors.js';
import { classifyError } from '../classifyError.js';
import { liveSyncVersionProblem, readsSourceText, SQL_ASCII_SOURCE } from '../preflight/sourceChecks.js';

/** How often every process sharing a run records that it is alive. */
const HEARTBEAT_MS = 5_000;
/** How long recording why a run failed may hold the error back. */
const FAILURE_WRITE_MS = 2_000;

export interface RunOptions {
  env: Env;
  /** Batches copied at once; default the plan's copy.jobs. */
  jobs?: number;
  /** Resume even though the plan changed since the run began. */
  force?: boolean;
  hooks?: EngineHooks;
  onEvent?: EventSink;
  abortSignal?: AbortSignal;
  transientAttempts?: number;
  retryBaseDelayMs?: number;
  /** One in this many verified documents has its bytes read back (default SAMPLE_EVERY); tests use 1. */
  sampleEvery?: number;
  /** Documents uploaded at once, across all batches of this process. */
  blobConcurrency?: number;
  /** Blob service retries (the SDK's exponential backoff) before a document fails. */
  blobRetries?: number;
  /** How long one try of a Blob request may go unanswered before it is retried (default 60 s). */
  blobTryTimeoutMs?: number;
  /** Live sync: return once the lag is under the plan's cutover.maxLag (default: sync until stopped). */
  until?: 'synced';
  /** Heartbeat interval of the live sync, ms. */
  heartbeatMs?: number;
  /** Join a run another process leads, but never lead it. */
  workerOnly?: boolean;
  /** Refuse to join when this many workers are alive (default: the plan's copy.maxWorkers). */
  maxWorkers?: number;
}

export interface RunResult extends RunSummary {
  runId: string;
  /** Live sync: why it returned, and where it stood. */
  sync?: { reason: StopReason; applied: string; lagMs: number | null; transactions: number; changes: number; divergences: number };
  /** The application was switched to the target by a cutover: nothing left for `run` to do. */
  cutOver?: boolean;
  /** Stopped at a safe point on request (Ctrl-C); resumable. */
  interrupted: boolean;
  /** The run had already finished; nothing was done. */
  alreadyFinished: boolean;
  /** This process worked as a worker of a run another process leads: the batches it copied. */
  worker?: { batches: number };
}

export async function runMigration(loaded: LoadedPlan, options: RunOptions): Promise<RunResult> {
  const { plan } = loaded;
  const secrets = resolveSecrets(loaded, options.env, ['source', 'target', 'state', 'blobConnectionString', 'blobSas']);
  const emit = emitter(options.onEvent);
  let me = workerId(whoAmI());
  const started = Date.now();
  const store = await StateStore.open({ connectionString: secrets.state, schema: plan.state.schema });
  let source: pg.Client | null = null;
  let target: pg.Client | null = null;
  let beat: NodeJS.Timeout | undefined;
  /** The slot's WAL measured while no sync streams from it (the copy until live sync begins). */
  let slotWatch: SlotWatch | null = null;
  let slotWarned = false;
  const unwatchSlot = async () => {
    const w = slotWatch;
    slotWatch = null;
    await w?.stop();
  };
  // The run's and this worker's locks live on the store's session: if it is dropped, another
  // process may lead the run now. This one then stops at its next safe point (as on Ctrl-C) and
  // says why (exit 3), rather than carry on without its lock.
  const lockLost = new AbortController();
  const abortSignal = options.abortSignal ? AbortSignal.any([options.abortSignal, lockLost.signal]) : lockLost.signal;
  store.onSessionLost((why) => {
    emit('warning', { message: `the state store session holding this process's locks ended (${why}): stopping at a safe point` });
    lockLost.abort(why);
  });
  /** Thrown where the run would return as interrupted, when it stopped because its locks were lost. */
  const lockLostError = () =>
    new ConnectError(
      `the state store session holding this process's locks ended (${String(lockLost.signal.reason)}): another process may lead the run now, so this one stopped at a safe point`,
      { hint: 'check that the state store answers, then run the same command again: it resumes the run, or joins the process leading it' },
    );
  /**
   * The run this process opened: a failure from then on is recorded in its events, for `status`
   * (as the run's while this process leads it, as a worker's while it only copies for a leader).
   */
  let failedRunId: string | null = null;
  let leads = false;
  try {
    // 1. State store: migrate, finish or undo an interrupted cutover or rollback, open or resume
    //    the run, take its lock. A second process is refused.
    await store.migrate();
    const recovered = await recoverPendingSwitch(loaded, { env: options.env });
    if (recovered) emit('warning', { message: `an interrupted ${recovered.kind} was ${recovered.outcome}` });
    const staleMs = plan.copy.workerTimeoutMs;
    const opened = await openRun(store, loaded, {
      force: options.force === true,
      workerOnly: options.workerOnly === true,
      maxWorkers: options.maxWorkers ?? plan.copy.maxWorkers,
      staleMs,
    });
    let run = opened.run;
    failedRunId = run.id;
    leads = !opened.worker;
    /** Nothing left for this process: the run ended, or a cutover switched the application. */
    const over = async (): Promise<RunResult | null> =>
      opened.alreadyFinished || run.status !== 'active' || run.phase === 'cutover'
        ? {
            runId: run.id,
            interrupted: false,
            alreadyFinished: true,
            ...(run.phase === 'cutover' ? { cutOver: true } : {}),
            ...(await summarize(store, run.id, started)),
          }
        : null;
    const finished = await over();
    if (finished) return finished;
    const live = plan.sync.mode === 'logical';
    // Every process sharing the run is a worker: registered, alive while it holds its lock and
    // beats, its claims given back to the others once it is not.
    me = await takeWorkerId(store, me);
    await registerWorker(store.knex, run.id, me, whoAmI());
    let doingNow = opened.worker ? 'joining' : 'leading';
    const doing = (what: string) => {
      doingNow = what;
    };
    beat = setInterval(() => {
      void heartbeat(store.knex, me, doingNow).catch(() => undefined);
      void store.pingSession();
    }, HEARTBEAT_MS);
    beat.unref();
    emit('run:start', { runId: run.id, resumed: opened.resumed, planName: plan.name, ...(opened.worker ? { worker: true } : {}) });
    source = await connect({ role: 'source', connectionString: secrets.source });
    if (readsSourceText(plan)) await refuseSqlAscii(source);
    if (live) await refuseOldSourceForSync(source);
    target = await connect({ role: 'target', connectionString: secrets.target });
    // Only the leader may move the run to other databases: a worker copies where the run does.
    const found = { source: await databaseIdentity(source), target: await databaseIdentity(target) };
    await settleRunDatabases(store, run.id, found, opened.worker ? { role: 'other' } : { role: 'leader', force: options.force === true });
    const stateInTarget = secrets.state === secrets.target;
    const tasks = await tableTasks(source, plan);
    // A new run never begins with a blob template that can give two rows one name; one under way
    // (begun before its source lost a unique key, say) goes on, as verify and cutover do.
    const colliding = tasks.find((t) => t.documents?.namesCollide);
    if (colliding && !(await store.hasBatches(run.id)))
      throw new PreconditionError(`${colliding.display}: ${colliding.documents!.namesCollide}; nothing was copied`);
    const copyWith = (snapshot: string | null, leftovers: boolean) =>
      copyPhase({
        runId: run.id,
        store,
        tasks: new Map([...tasks.values()].map((t) => [t.display, t])),
        sourceUrl: secrets.source,
        targetUrl: secrets.target,
        blob: plan.target.blob
          ? { plan: plan.target.blob, credentials: { connectionString: secrets.blobConnectionString, sas: secrets.blobSas } }
          : null,
        blobConcurrency: options.blobConcurrency ?? 8,
        ...(options.blobRetries === undefined ? {} : { blobRetries: options.blobRetries }),
        ...(options.blobTryTimeoutMs === undefined ? {} : { blobTryTimeoutMs: options.blobTryTimeoutMs }),
        snapshot,
        stateInTarget,
        jobs: options.jobs ?? plan.copy.jobs,
        workerId: me,
        fingerprint: loaded.fingerprint,
        hooks: options.hooks ?? {},
        emit,
        abortSignal,
        verifyLeftovers: leftovers,
        ...(options.transientAttempts === undefined ? {} : { transientAttempts: options.transientAttempts }),
        ...(options.sampleEvery === undefined ? {} : { sampleEvery: options.sampleEvery }),
        ...(options.retryBaseDelayMs === undefined ? {} : { retryBaseDelayMs: options.retryBaseDelayMs }),
      });

    // A worker copies batches of the run another process leads, until the copy needs no more
    // workers, or the leader is gone and this worker takes over.
    if (opened.worker) {
      await store.appendEvent(run.id, 'worker:join', `worker ${me} joined the run`, { worker: me });
      const out = await workAsWorker({
        store,
        runId: run.id,
        workerOnly: options.workerOnly === true,
        fingerprint: loaded.fingerprint,
        standby: live && options.until === undefined,
        // Checked again before copying: the leader replaces a record made before its own.
        copy: async (snapshot) => {
          await settleRunDatabases(store, run.id, found, { role: 'other' });
          return copyWith(snapshot, false);
        },
        doing,
        releaseMine: () => releaseClaimsOf(store.knex, run.id, me),
        abortSignal,
      });
      if (out.kind === 'interrupted' && lockLost.signal.aborted) throw lockLostError();
      if (out.kind !== 'lead') {
        const mine = (await store.listBatches(run.id)).filter((b) => b.claimed_by === me && b.status !== 'pending').length;
        await store.appendEvent(run.id, 'worker:leave', `worker ${me} left the run after copying ${mine} batches`, {
          worker: me,
          batches: mine,
        });
        return {
          runId: run.id,
          interrupted: out.kind === 'interrupted',
          alreadyFinished: false,
          worker: { batches: mine },
          ...(await summarize(store, run.id, started)),
        };
      }
      run = out.run;
      leads = true;
      // The run may have moved since this worker joined (a leader forced, or pointed elsewhere
      // while nothing was copied): it leads only where the run is.
      await settleRunDatabases(store, run.id, found, { role: 'other' });
      // Leading now: a run not recorded yet (begun by an older cloudshift) is recorded here.
      await store.runDatabases(run.id, found);
      // Taken over after a cutover recorded its phase: never back to the sync.
      const ended = await over();
      if (ended) return ended;
      doing('leading');
      emit('warning', { message: `the leader of run ${run.id} is gone: this process (${me}) leads it now` });
      await store.appendEvent(run.id, 'worker:lead', `worker ${me} took over the run's leadership in phase ${run.phase}`, { worker: me });
    }
    let phase: Phase = run.phase as Phase;
    /** A rollback before cutover (or a cleanup) ended the run while this process led it: it stops. */
    const stillActive = async () => {
      const now = await store.getRun(run.id);
      if (now?.status === 'active') return;
      throw new StateConflictError(
        `run ${run.id} was ended (${now?.status ?? 'gone'}: rolled back before cutover, or cleaned up) while this process led it: it stopped`,
        {
          hint: `\`cloudshift cleanup\` drops a slot or publication made meanwhile; then \`cloudshift run\` starts a new run`,
        },
      );
    };
    const enter = async (next: Phase) => {
      // Another process may lead the run now: no phase is entered (nor the run finished) without it.
      if (lockLost.signal.aborted) throw lockLostError();
      await stillActive();
      phase = next;
      doing(`leading: ${next}`);
      await store.updateRun(run.id, { phase: next });
      await store.appendEvent(run.id, 'run:phase', `phase ${next}`);
      emit('run:phase', { runId: run.id, phase: next });
    };
    const todo = (step: Phase) => PHASES.indexOf(phase) <= PHASES.indexOf(step);

    // 2. Schema: every table exists and every column type can be copied (checked before anything
    //    is written); target tables must be empty (or truncated, if the plan says so); then the
    //    schemas, types, sequences and tables with their primary keys. Safe to interrupt.
    const tables = tasks.map((t) => t.name);
    // The plan's own sequences exist and can be read, before anything is written on either side.
    await requireListedSequences(source, plan.sequences);
    // Before the tables are published (and their schema read for the target, the reverse sync's side).
    if (live && todo('schema')) {
      for (const change of await ensureReplicaIdentity(source, plan, tables)) {
        emit('warning', { message: `${change.table}: set on the source for live sync: ${change.statement}` });
        await store.appendEvent(run.id, 'sync:identity', `${change.table}: ${change.statement}`, { table: change.table });
      }
    }
    for (const t of tasks.filter((x) => !x.shape.keyColumns)) {
      // With live sync, its replica identity was seen to above.
      const message = `${t.display} has no primary key or usable unique key: it is copied by ctid ranges and verified as a whole${live ? '' : '; live sync will need a key or REPLICA IDENTITY FULL'}`;
      emit('warning', { message });
      if (!opened.resumed) await store.appendEvent(run.id, 'table:keyless', message);
    }
    const schema = await readSourceSchema(source, planSelections(plan), plan.sequences);
    // What the replay leaves out is said before the schema is written, and recorded once.
    if (todo('schema') && schema.skipped.length > 0) {
      for (const line of skippedLines(schema.skipped)) emit('warning', { message: line });
      // Once per run: a first attempt may have stopped before it got here.
      if (!(await store.hasEvent(run.id, 'schema:skipped')))
        await store.appendEvent(run.id, 'schema:skipped', skippedLines(schema.skipped).join('; '), { skipped: schema.skipped });
    }
    const state = { pool: store.pool, schema: store.schema, runId: run.id };
    // A plan given one more sequence (--force) after the schema phase: it is made now; and so is
    // a partition made on the source since.
    if (!todo('schema')) {
      await applyListedSequences(target, schema, plan.sequences);
      await newPartitions(() => applyNewPartitions(target!, schema));
    }
    if (todo('schema')) {
      // Until the schema phase begins, the target's tables are the operator's: whoever runs this
      // (again, after a refusal; or a process that took the run over) checks or truncates them.
      if (phase === 'created') await handleExistingData(target, tasks, plan.target.existingData);
      await enter('schema');
      await applyPreData(target, schema);
      const aside = await setAsideForeignKeys(target, state, tables);
      if (aside.length > 0) {
        const message = `${aside.length} foreign key${aside.length === 1 ? '' : 's'} already on the target (${aside
          .slice(0, 3)
          .map((c) => `${c.name} on ${displayName(c.table)}`)
          .join(
            ', ',
          )}${aside.length > 3 ? ', …' : ''}) ${aside.length === 1 ? 'is' : 'are'} set aside for the copy and put back after the data`;
        emit('warning', { message });
        await store.appendEvent(run.id, 'schema:set-aside', message);
      }
    }

    // 3. Planning: split every table into key ranges, recorded in one transaction.
    if (todo('planning')) {
      await enter('planning');
      await planBatches(store, run.id, source, tasks);
    }

    // 4. Copy: batches in parallel inside one snapshot, each verified. Ctrl-C stops at a safe
    //    point; `cloudshift run` resumes with the batches not yet done.
    // A rerun that finds every batch settled (stopped after the copy, before the indexes) takes no
    // new snapshot: under live sync it would re-copy keyless tables and widen the tolerance.
    const left = await openBatches(store.knex, run.id);
    const copyDone = left.pending + left.claimed + left.copied === 0 && (!live || run.consistent_lsn !== null);
    if (todo('copy') && !copyDone) {
      await enter('copy');
      await releaseDeadClaims(store.knex, run.id, staleMs);
      const snapshot = live
        ? await prepareForwardSync(store, run.id, plan, source, secrets.source, tasks)
        : await exportSnapshot(secrets.source);
      // A rollback while the slot was being made (it waits behind long transactions): no copy.
      await stillActive().catch(async (err: unknown) => {
        await snapshot.release();
        throw err;
      });
      watchSlot();
      try {
        // Without live sync, a table without a key copied in part before this snapshot is copied
        // again whole from it. Before the new snapshot is published: no process may mark a batch
        // (or start one) while its table is emptied and its batches sent back.
        if (!live) {
          await store.updateRun(run.id, { snapshot_name: null });
          const recopied = await recopyKeyless(store, run.id, tasks, partlyCopied(stateInTarget), stateInTarget ? null : target);
          if (recopied.length > 0) {
            const message = `the copy resumed from a newer snapshot: tables without a key are copied again whole (${recopied.join(', ')})`;
            emit('warning', { message });
            await store.appendEvent(run.id, 'copy:recopy', message, { recopied });
          }
        }
        await store.updateRun(run.id, { snapshot_name: snapshot.name });
        // Copy with the others until no batch is pending, claimed by a live worker, or copied
        // without being verified (its worker died between the commit and the verification). A
        // pass over those can send a batch back to pending (a document found wrong): the loop
        // copies it again, so the data phase never ends with a batch left to copy.
        let result = await copyWith(snapshot.name, true);
        let leftoversChecked = false;
        for (;;) {
          if (abortSignal.aborted) result = { ...result, stoppedEarly: true };
          if (result.stoppedEarly) break;
          // No batch is claimed in a run that ended (claimBatches): this loop would spin.
          await stillActive();
          // Nothing of this process is in flight once copyPhase returned: a claim it still holds
          // (a batch whose claim was lost and found again) goes back, or it would wait for itself.
          await releaseClaimsOf(store.knex, run.id, me);
          await releaseDeadClaims(store.knex, run.id, staleMs);
          const open = await openBatches(store.knex, run.id);
          let more: CopyPhaseResult;
          if (open.pending > 0) {
            more = await copyWith(snapshot.name, false);
            leftoversChecked = false;
          } else if (open.claimed > 0) {
            doing('waiting for the other workers');
            await delay(500);
            continue;
          } else if (!leftoversChecked && (await store.listBatches(run.id)).some((b) => b.status === 'copied')) {
            more = await copyWith(snapshot.name, true);
            leftoversChecked = true;
          } else break;
          result = { mismatches: result.mismatches + more.mismatches, stoppedEarly: more.stoppedEarly };
        }
        if (result.stoppedEarly) {
          // A batch cut short (its uploads aborted) goes back to pending now, not when this process is gone.
          await releaseClaimsOf(store.knex, run.id, me);
          return await interrupted();
        }
      } finally {
        await snapshot.release();
      }
    }

    /** Partitions created on the target (made on the source since the schema phase), said and recorded. */
    async function newPartitions(create: () => Promise<string[]>): Promise<number> {
      const created = await create();
      if (created.length > 0) {
        const message = `created on the target the partitions made on the source since the schema was replayed: ${created.join(', ')}`;
        emit('warning', { message });
        await store.appendEvent(run.id, 'schema:partitions', message, { created });
      }
      return created.length;
    }

    /** Starts measuring the slot's WAL, under live sync, unless it is measured already. */
    function watchSlot() {
      if (!live || slotWatch) return;
      slotWatch = startSlotWatch({
        knex: store.knex,
        runId: run.id,
        slot: plan.sync.slot,
        connect: () => connect({ role: 'source', connectionString: secrets.source, applicationName: 'cloudshift monitor' }),
        everyMs: options.heartbeatMs ?? HEARTBEAT_MS,
        warnRetainedWalBytes: plan.sync.warnRetainedWalBytes,
        workerId: me,
        // Once per process, however often the watch stops and starts again before the sync.
        onWarning: async (message) => {
          if (slotWarned) return;
          slotWarned = true;
          emit('warning', { message });
          await store.appendEvent(run.id, 'sync:warning', message).catch(() => undefined);
        },
        abortSignal,
      });
    }

    /** What every forward sync of this run is given. */
    function syncOptions() {
      return {
        store,
        runId: run.id,
        plan,
        secrets,
        tasks,
        workerId: me,
        ...(options.heartbeatMs === undefined ? {} : { heartbeatMs: options.heartbeatMs }),
        abortSignal,
        onWarning: (message: string) => emit('warning', { message }),
        // Read from the source's catalogs as they are now, on this process's idle sessions.
        onMissingPartition: () =>
          newPartitions(async () => applyNewPartitions(target!, await readSourceSchema(source!, planSelections(plan), plan.sequences))),
        // A cutover switched (phase), or a rollback before cutover ended the run (status).
        shouldStop: async () => {
          const now = await store.getRun(run.id);
          return now?.phase === 'cutover' || now?.status !== 'active';
        },
      };
    }

    /** Stopped on request at a safe point: said, recorded, and the run's figures so far. */
    async function interrupted(): Promise<RunResult> {
      if (lockLost.signal.aborted) throw lockLostError();
      emit('run:stopping', { runId: run.id, reason: 'interrupted' });
      await store.appendEvent(run.id, 'run:interrupted', 'stopped at a safe point on request');
      return { runId: run.id, interrupted: true, alreadyFinished: false, ...(await summarize(store, run.id, started)) };
    }

    /** A forward sync of this run has ended: why, where, and the run's result. */
    async function syncEnded(result: SyncLoopResult): Promise<RunResult> {
      const s = result.stats;
      const reason: StopReason =
        result.reason === 'switched' && (await store.getRun(run.id))?.status === 'aborted' ? 'aborted' : result.reason;
      const sync = {
        reason,
        applied: formatLsn(s.applied),
        lagMs: s.lagMs,
        transactions: s.transactions,
        changes: s.changes,
        divergences: s.divergences + caughtUpDivergences,
      };
      await store.appendEvent(run.id, `sync:${reason}`, syncStopMessage(reason, sync.applied, s.lagMs), sync);
      emit('sync:stop', { runId: run.id, ...sync });
      if (result.reason === 'stopped' && lockLost.signal.aborted) throw lockLostError();
      return {
        runId: run.id,
        interrupted: result.reason === 'stopped',
        alreadyFinished: false,
        sync,
        ...(reason === 'switched' ? { cutOver: true } : {}),
        ...(await summarize(store, run.id, started)),
      };
    }

    let caughtUpDivergences = 0;
    /**
     * A copy resumed from a newer snapshot holds rows of two moments until the stream has passed
     * that snapshot: a row whose key moved between ranges copied at each is there twice, a row
     * copied later can name a parent copied earlier. Constraints are built once it has passed
     * (the sync applies by primary key, which the tables have from the start). Returns the
     * run's result when stopped on request.
     */
    async function catchUpResumedCopy(): Promise<RunResult | null> {
      const row = await syncRow(store.knex, run.id);
      const until = row?.tolerateUntil ?? null;
      if (until === null || row!.lsn >= until) return null;
      emit('warning', {
        message: `the copy resumed from a newer snapshot: catching up to ${formatLsn(until)} before building constraints`,
      });
      const result = await runForwardSync({ ...syncOptions(), untilFence: until });
      // Stopped on request, or a rollback ended the run meanwhile.
      if (result.reason !== 'fence') return syncEnded(result);
      caughtUpDivergences = result.stats.divergences;
      await store.appendEvent(
        run.id,
        'sync:caught-up',
        `caught up past the resumed copy's snapshot (${formatLsn(until)}) before building constraints`,
        {
          applied: formatLsn(result.stats.applied),
        },
      );
      return null;
    }

    // A run resumed after its copy: the slot has kept WAL since, measured from here on too.
    watchSlot();

    // 5. Indexes and constraints, built in parallel after the data, then validated.
    if (todo('indexes')) {
      if (live) {
        // Its sync loop measures the slot while it catches up.
        await unwatchSlot();
        const caught = await catchUpResumedCopy();
        if (caught) return caught;
        watchSlot();
      }
      await options.hooks?.beforePostData?.();
      await enter('indexes');
      await applyPostData(
        hookedConnect(
          () => connect({ role: 'target', connectionString: secrets.target, applicationName: 'cloudshift index' }),
          options.hooks,
        ),
        schema,
        {
          jobs: options.jobs ?? plan.copy.jobs,
        },
      );
      await restoreForeignKeys(target, state);
    }

    // 6. Sequences, from the source's current values.
    if (todo('sequences')) {
      await enter('sequences');
      const values = await readSequences(source, tables, plan.sequences);
      await setSequences(target, values);
      emit('sequences:set', { count: values.length });
    }

    // 7. Views, functions and triggers.
    if (todo('final')) {
      await enter('final');
      await applyFinal(target, schema);
    }

    // 8. Live sync: stream the slot's changes into the target until stopped, until synced, or
    //    until a cutover switches the application. Ctrl-C stops cleanly; `run` resumes it.
    if (live) {
      await unwatchSlot();
      // Recorded on every resume or takeover too: the report's timeline shows each stretch of sync.
      await enter('sync');
      emit('sync:start', { runId: run.id, slot: plan.sync.slot });
      const result = await runForwardSync({
        ...syncOptions(),
        ...(options.until === 'synced' ? { untilLagMs: plan.cutover.maxLagMs } : {}),
        onStats: (s) => emit('sync:stats', { applied: formatLsn(s.applied), lagMs: s.lagMs, lagBytes: s.lagBytes, changes: s.changes }),
        ...(options.hooks?.afterSyncCommit ? { afterCommit: options.hooks.afterSyncCommit } : {}),
      });
      return await syncEnded(result);
    }

    await enter('done');
    const summary = await summarize(store, run.id, started);
    await store.updateRun(run.id, { status: 'finished' });
    await store.appendEvent(
      run.id,
      'run:done',
      `copied ${summary.rows} rows in ${summary.tables.length} tables; ${summary.mismatches} mismatched batches`,
      {
        rows: summary.rows,
        bytes: summary.bytes,
        mismatches: summary.mismatches,
      },
    );
    emit('run:done', {
      runId: run.id,
      tables: summary.tables.length,
      rows: summary.rows,
      bytes: summary.bytes,
      mismatches: summary.mismatches,
      seconds: summary.seconds,
    });
    return { runId: run.id, interrupted: false, alreadyFinished: false, ...summary };
  } catch (err) {
    // Why this process stopped, where an operator looks next. Not when its locks were lost (the
    // store may not answer, and another process may lead the run by now), nor on Ctrl-C.
    if (failedRunId !== null && !abortSignal.aborted) {
      const known = classifyError(err);
      const details = known
        ? { code: known.code, exitCode: known.exitCode, hint: known.hint ?? null }
        : { code: 'internal', exitCode: 1, hint: null };
      // Bounded: a state store that stopped answering must not hold the error back.
      const written = store.appendEvent(failedRunId, leads ? 'run:failed' : 'worker:failed', messageOf(known ?? err), details);
      await settlesWithin(
        written.catch(() => undefined),
        FAILURE_WRITE_MS,
      );
    }
    throw err;
  } finally {
    clearInterval(beat);
    await unwatchSlot();
    await Promise.allSettled([source?.end(), target?.end()]);
    await store.close();
  }
}

function syncStopMessage(reason: StopReason, applied: string, lagMs: number | null): string {
  const lag = lagMs === null ? '' : `, lag ${lagMs} ms`;
  switch (reason) {
    case 'synced':
      return `in sync: applied up to ${applied}${lag}`;
    case 'stopped':
      return `sync stopped on request at ${applied}; \`cloudshift run\` resumes it`;
    case 'switched':
      return `sync ended: the application was switched to the target (applied up to ${applied})`;
    case 'fence':
      return `sync reached the cutover fence at ${applied}`;
    case 'aborted':
      return `sync ended: the migration was rolled back before cutover (applied up to ${applied})`;
  }
}

/** Index-build connections that call the postDataStatement hook before each statement. */
function hookedConnect(open: () => Promise<pg.Client>, hooks: EngineHooks | undefined): () => Promise<pg.Client> {
  const hook = hooks?.postDataStatement;
  if (!hook) return open;
  let statements = 0;
  return async () => {
    const client = await open();
    const query = client.query.bind(client) as (...args: unknown[]) => Promise<unknown>;
    (client as { query: unknown }).query = async (...args: unknown[]) => {
      statements += 1;
      await hook(statements);
      return query(...args);
    };
    return client;
  };
}

/** As the dry run's source.version: before anything is copied, not once the copy is done. */
async function refuseOldSourceForSync(source: pg.Client): Promise<void> {
  const problem = liveSyncVersionProblem(await serverVersion(source));
  if (problem) throw new PreconditionError(problem.message, { hint: problem.hint });
}

/** As the dry run's source.encoding: documents rows and live sync's changes are read as UTF-8 text, which SQL_ASCII does not promise. */
async function refuseSqlAscii(source: pg.Client): Promise<void> {
  const { rows } = await source.query<{ e: string }>(`SELECT current_setting('server_encoding') AS e`);
  if (rows[0]?.e === 'SQL_ASCII') {
    throw new PreconditionError(SQL_ASCII_SOURCE.message, { hint: SQL_ASCII_SOURCE.hint });
  }
}
