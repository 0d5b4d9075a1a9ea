/**
 * What an operator needs to know about a migration, read from the state store without writing
 * anything: the run, per-table progress with throughput over the last minute and an ETA, the
 * verification state, the last events, whether a process is working on the run, and what to do
 * next. `status` prints it; `report` charts it. Field names are stable (documented in the README).
 */
import type { LoadedPlan } from '../plan/parse.js';
import { inspectSchema, SYNC_MIGRATION } from '../state/migrations.js';
import { tableProgress } from '../state/sql/tableProgress.js';
import type { StateStore } from '../state/store.js';
import { forwardSlotDropped, latestSwitch, syncRow } from '../state/sql/sync.js';
import { advisoryHolders, listWorkers } from '../state/sql/workers.js';
import type { RunRow } from '../state/types.js';
import { formatLsn } from '../sync/lsn.js';
import { tablesVerifyFoundDiffering } from '../state/sql/verifyVerdicts.js';

export const THROUGHPUT_WINDOW_SECONDS = 60;

export interface TableOverview {
  table: string;
  kind: 'table' | 'documents';
  batches: { total: number; done: number; pending: number; inFlight: number; verified: number; mismatched: number };
  rows: number;
  bytes: number;
  /** Over the last minute. */
  rowsPerSecond: number;
  bytesPerSecond: number;
  /** null when nothing moved in the last minute, 0 when done. */
  etaSeconds: number | null;
  verification: 'verified' | 'mismatched' | 'pending';
}

export interface EventOverview {
  at: string;
  kind: string;
  message: string;
  who: string;
}

/** How old a lag measurement may be and still be shown as current. */
const LAG_FRESH_SECONDS = 10;

export interface SyncOverview {
  slot: string | null;
  publication: string | null;
  consistentLsn: string | null;
  appliedLsn: string;
  /** Commit time on the source of the last applied change (or heartbeat). */
  sourceCommitAt: string | null;
  appliedAt: string;
  lagMs: number | null;
  lagBytes: number | null;
  retainedWalBytes: number | null;
  /** The run's slot was dropped (cleanup, rollback): no WAL is kept for it, and the figures above are null. */
  slotDropped: boolean;
  /** When the run's leader last measured lag and retained WAL (during the copy too). */
  measuredAt: string | null;
  /**
   * The lag and retained WAL are older than LAG_FRESH_SECONDS (the syncing process measures them
   * every second): no process measures them now, and they say how things were, not how they are.
   */
  lagStale: boolean;
  /**
   * When the figures are stale, the slot as `status` read it from the source itself (the WAL it
   * retains, and how far the source is past the slot's confirmed position); null when they are
   * fresh, or the source could not be read from where status runs.
   */
  readFromSource: { at: string; retainedWalBytes: number | null; walBehindBytes: number | null } | null;
  divergences: number;
  lastSwitch: { kind: string; state: string; pauseMs: number | null; startedAt: string; by: string } | null;
}

export interface WorkerView {
  id: string;
  host: string;
  pid: number;
  startedAt: string;
  lastSeen: string;
  doing: string | null;
  /** Holds its lock and beat recently. */
  alive: boolean;
  /** Holds the run's lock. */
  leader: boolean;
}

export interface Overview {
  plan: string;
  planFile: string;
  /** The processes sharing the run (empty before a run or with an older state store). */
  workers: WorkerView[];
  run: {
    id: string;
    phase: string;
    status: string;
    startedAt: string;
    updatedAt: string;
    createdBy: string;
    toolVersion: string;
    /** A cloudshift process holds the run's lock right now, and (when it is a run's) reports alive. */
    processActive: boolean;
    /**
     * The process leading the run holds its lock but has not reported for longer than
     * copy.workerTimeout: hung, stopped (SIGSTOP) or cut off from the state store.
     */
    processStalled: { host: string; pid: number; lastSeen: string } | null;
    planChanged: boolean;
    /** Why a process of the run stopped with an error, if none started, resumed or took it over since. */
    lastFailure: { at: string; who: string; code: string; message: string; hint: string | null } | null;
  } | null;
  tables: TableOverview[];
  totals: {
    rows: number;
    bytes: number;
    batches: number;
    done: number;
    mismatched: number;
    /** Batches whose target rows were checksum-compared with the source and matched. */
    verified: number;
    rowsPerSecond: number;
    etaSeconds: number | null;
  };
  /** Live sync; null until the plan uses it and its slot exists. */
  sync: SyncOverview | null;
  events: EventOverview[];
  next: string;
}

export async function readOverview(store: StateStore, loaded: LoadedPlan, options: { events?: number } = {}): Promise<Overview> {
  const planName = loaded.plan.name;
  const base = { plan: planName, planFile: loaded.file, sync: null, workers: [] };
  const syncOf = async (run: RunRow, applied: readonly string[]): Promise<SyncOverview | null> => {
    if (!applied.includes(SYNC_MIGRATION)) return null;
    const row = await syncRow(store.knex, run.id);
    if (!row) return null;
    const sw = await latestSwitch(store.knex, run.id);
    const dropped = await forwardSlotDropped(store.knex, run.id);
    return {
      slot: run.slot_name,
      publication: run.publication_name,
      consistentLsn: run.consistent_lsn,
      appliedLsn: formatLsn(row.lsn),
      sourceCommitAt: row.sourceCommitAt?.toISOString() ?? null,
      appliedAt: row.appliedAt.toISOString(),
      lagMs: dropped ? null : row.lagMs,
      lagBytes: dropped ? null : row.lagBytes,
      retainedWalBytes: dropped ? null : row.retainedWalBytes,
      slotDropped: dropped,
      measuredAt: row.measuredAt?.toISOString() ?? null,
      lagStale: row.measuredSecondsAgo === null || row.measuredSecondsAgo > LAG_FRESH_SECONDS,
      readFromSource: null,
      divergences: row.divergences,
      lastSwitch: sw ? { kind: sw.kind, state: sw.state, pauseMs: sw.pause_ms, startedAt: sw.started_at.toISOString(), by: sw.by } : null,
    };
  };
  const status = await inspectSchema(store.db, store.schema);
  if (!status.exists) return { ...base, run: null, tables: [], totals: emptyTotals(), events: [], next: nextStep(loaded, null, []) };
  const run = (await store.getActiveRun(planName)) ?? (await store.getLatestRun(planName));
  if (!run) return { ...base, run: null, tables: [], totals: emptyTotals(), events: [], next: nextStep(loaded, null, []) };

  const lock = await store.db.query<{ held: boolean }>(`SELECT EXISTS (${advisoryHolders('$1')}) AS held`, [`cloudshift.run:${run.id}`]);
  const workers = await listWorkers(store.knex, run.id, loaded.plan.copy.workerTimeoutMs);
  // A lock alone does not say the process works: a hung one keeps it. A run's leader also reports
  // (a heartbeat every 5 s); a cutover holding the lock is no worker and is taken at its word.
  const stalled = workers.find((w) => w.leader && !w.alive);
  const progress = await tableProgress(store.knex, run.id, THROUGHPUT_WINDOW_SECONDS);
  // A table the last verify of it found differing (and did not mend) is mismatched, whatever its batches say.
  const verifyDiffering = new Set((await tablesVerifyFoundDiffering(store.knex, run.id)).map((d) => d.table));
  const active = lock.rows[0]?.held === true && !stalled;
  const tables = progress.map((p): TableOverview => {
    const done = p.verified + p.mismatched + p.copied;
    const remaining = p.total - done;
    const rowsPerSecond = p.recent_seconds ? p.recent_rows / p.recent_seconds : 0;
    const avgRows = done > 0 ? p.rows / done : 0;
    return {
      table: p.relation,
      kind: p.kind,
      batches: { total: p.total, done, pending: p.pending, inFlight: p.in_flight, verified: p.verified, mismatched: p.mismatched },
      rows: p.rows,
      bytes: p.bytes,
      rowsPerSecond,
      bytesPerSecond: p.recent_seconds ? p.recent_bytes / p.recent_seconds : 0,
      // Nothing is copying (no process holds the run): no time can be promised.
      etaSeconds: remaining === 0 ? 0 : active && rowsPerSecond > 0 && avgRows > 0 ? (remaining * avgRows) / rowsPerSecond : null,
      verification: p.mismatched > 0 || verifyDiffering.has(p.relation) ? 'mismatched' : p.verified === p.total ? 'verified' : 'pending',
    };
  });
  const failure = await store.lastFailure(run.id);
  const events = (await store.listEvents(run.id, { limit: options.events ?? 10 })).map((e) => ({
    at: e.at.toISOString(),
    kind: e.kind,
    message: e.message,
    who: `${e.os_user}@${e.host} (pid ${e.pid})`,
  }));
  const rowsPerSecond = tables.reduce((n, t) => n + t.rowsPerSecond, 0);
  // The whole copy's ETA by batches: tables not yet begun have no rate of their own, but the run's
  // batches finish at one (over the longest span any table was measured in).
  const left = tables.reduce((n, t) => n + t.batches.total - t.batches.done, 0);
  const span = Math.max(0, ...progress.map((p) => p.recent_seconds ?? 0));
  const batchesPerSecond = span > 0 ? progress.reduce((n, p) => n + p.recent_batches, 0) / span : 0;
  const totalEta = progress.length === 0 ? null : left === 0 ? 0 : active && batchesPerSecond > 0 ? left / batchesPerSecond : null;
  const runView = {
    id: run.id,
    phase: run.phase,
    status: run.status,
    startedAt: run.created_at.toISOString(),
    updatedAt: run.updated_at.toISOString(),
    createdBy: run.created_by,
    toolVersion: run.tool_version,
    processActive: active,
    processStalled: stalled ? { host: stalled.host, pid: stalled.pid, lastSeen: stalled.last_seen.toISOString() } : null,
    planChanged: run.plan_fingerprint !== loaded.fingerprint,
    lastFailure: failure
      ? {
          at: failure.at.toISOString(),
          who: `${failure.os_user}@${failure.host} (pid ${failure.pid})`,
          code: String(failure.details.code ?? 'internal'),
          message: failure.message,
          hint: typeof failure.details.hint === 'string' ? failure.details.hint : null,
        }
      : null,
  };
  const sync = await syncOf(run, status.applied);
  return {
    ...base,
    sync,
    workers: workers.map((w) => ({
      id: w.id,
      host: w.host,
      pid: w.pid,
      startedAt: w.started_at.toISOString(),
      lastSeen: w.last_seen.toISOString(),
      doing: w.doing,
      alive: w.alive,
      leader: w.leader,
    })),
    run: runView,
    tables,
    totals: {
      rows: tables.reduce((n, t) => n + t.rows, 0),
      bytes: tables.reduce((n, t) => n + t.bytes, 0),
      batches: tables.reduce((n, t) => n + t.batches.total, 0),
      done: tables.reduce((n, t) => n + t.batches.done, 0),
      mismatched: tables.reduce((n, t) => n + t.batches.mismatched, 0),
      verified: tables.reduce((n, t) => n + t.batches.verified, 0),
      rowsPerSecond,
      etaSeconds: totalEta,
    },
    events,
    next: nextStep(loaded, runView, tables, sync),
  };
}

function emptyTotals(): Overview['totals'] {
  return { rows: 0, bytes: 0, batches: 0, done: 0, mismatched: 0, verified: 0, rowsPerSecond: 0, etaSeconds: null };
}

function nextStep(loaded: LoadedPlan, run: Overview['run'], tables: TableOverview[], sync: SyncOverview | null = null): string {
  const file = loaded.file;
  if (!run) return `no run yet: check the plan with \`cloudshift dry-run ${file}\`, then start it with \`cloudshift run ${file}\``;
  const divergences = sync?.divergences ?? 0;
  const mismatched = tables.reduce((n, t) => n + t.batches.mismatched, 0);
  // Tables whose batches verified, but a verify after the copy found differing.
  const differing = tables.filter((t) => t.verification === 'mismatched' && t.batches.mismatched === 0).map((t) => t.table);
  const unverified = tables.reduce((n, t) => n + t.batches.total - t.batches.verified - t.batches.mismatched, 0);
  const found = [
    mismatched > 0 ? `${mismatched} mismatched batches` : '',
    differing.length > 0 ? `${differing.join(', ')} differing at the last verify` : '',
    divergences > 0 ? `${divergences} divergences` : '',
  ].filter(Boolean);
  if (run.status === 'finished') {
    if (found.length > 0)
      return `copy finished, but the target differs (${found.join(', ')}): find and repair the rows with \`cloudshift verify ${file} --repair\``;
    if (unverified > 0)
      return `copy finished, but ${unverified} batch${unverified === 1 ? ' was' : 'es were'} not verified: compare them with \`cloudshift verify ${file}\``;
    return `copy finished and every batch verified${loaded.plan.sync.mode === 'logical' ? '' : ` (sync.mode: none: the target is a copy as of the run; nothing more to do)`}`;
  }
  if (run.status === 'aborted') {
    return `this run was rolled back before cutover and has ended (the source untouched): \`cloudshift run ${file}\` starts a new one`;
  }
  if (run.planChanged) return `the plan changed since this run began: undo the change, or resume with \`cloudshift run ${file} --force\``;
  if (run.status === 'active' && run.phase === 'cutover') {
    return `cut over: the application uses the target. To switch back, \`cloudshift rollback ${file}\`; once sure, end the migration with \`cloudshift cleanup ${file}\` (drops the reverse slot kept for rollback)`;
  }
  if (run.status === 'active' && run.processStalled) {
    const p = run.processStalled;
    return `the process leading run ${run.id} (pid ${p.pid} on ${p.host}) holds it but has not reported since ${p.lastSeen}: it may be hung or cut off from the state store. Check it; if it is stuck, end it (kill ${p.pid} on ${p.host}) and resume with \`cloudshift run ${file}\``;
  }
  // Why the last process stopped, before asking for another.
  const failed = run.lastFailure
    ? `the last process (${run.lastFailure.who}) stopped at ${run.lastFailure.at} with ${run.lastFailure.code}: ${run.lastFailure.message}${run.lastFailure.hint ? ` (${run.lastFailure.hint})` : ''}. Once that is mended, `
    : '';
  if (run.status === 'active' && run.phase === 'sync' && !run.processActive) {
    return `${failed}live sync is not running: resume it with \`cloudshift run ${file}\`, then switch with \`cloudshift cutover ${file}\` (it also catches up by itself)`;
  }
  if (run.status === 'active' && run.phase === 'sync' && found.length > 0) {
    return `in live sync, but the target differs from the source (${found.join(', ')}): find and repair it with \`cloudshift verify ${file} --repair\`; \`cloudshift cutover\` refuses until then`;
  }
  if (run.status === 'active' && run.phase === 'sync') {
    return `in live sync: switch the application with \`cloudshift cutover ${file}\` once the lag is under cutover.maxLag`;
  }
  if (!run.processActive)
    return `${failed}no cloudshift process is working on run ${run.id} (phase ${run.phase}): resume it with \`cloudshift run ${file}\``;
  return `run in progress (phase ${run.phase}, started by ${run.createdBy}); follow it with \`cloudshift status ${file} --watch\``;
}
