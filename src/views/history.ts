/**
 * What happened during a run, over time, read from the state store without writing anything:
 * the phases as spans, copy throughput per time bucket, every cutover and rollback, the batches
 * that failed verification and the whole event log. `report` charts it. Everything is aggregated
 * by the server: a run can have 100,000 batches, and this reads a few hundred rows plus the
 * event log. Live sync keeps only its latest lag (the overview has it), so it has no series here.
 */
import { mismatchedBatches } from '../state/sql/mismatchedBatches.js';
import { runEvents } from '../state/sql/runEvents.js';
import { runPhases, type RunPhaseRow } from '../state/sql/runPhases.js';
import { copySpan, throughputBuckets } from '../state/sql/throughputBuckets.js';
import type { StateStore } from '../state/store.js';
import { inspectSchema, LAG_MIGRATION, SYNC_MIGRATION } from '../state/migrations.js';
import { lagBuckets, listSwitches, type SwitchRow } from '../state/sql/sync.js';
import type { EventOverview } from './overview.js';

/** At most this many mismatched batches are listed (each with its key range and error). */
export const MISMATCH_LIST_LIMIT = 1000;

/** Bucket widths a throughput series may use, in ms: "nice" steps from 10 ms to a day. */
export const BUCKET_STEPS_MS = [
  10, 20, 50, 100, 200, 250, 500, 1_000, 2_000, 5_000, 10_000, 15_000, 30_000, 60_000, 120_000, 300_000, 600_000, 900_000, 1_800_000,
  3_600_000, 7_200_000, 10_800_000, 21_600_000, 43_200_000, 86_400_000,
] as const;

/**
 * A series of buckets never has more points than this; since each step is at most 2.5 times the
 * one before, a span of more than a second has at least 48.
 */
export const MAX_POINTS = 120;

export interface PhaseSpan {
  phase: string;
  startedAt: string;
  endedAt: string;
  durationMs: number;
  /**
   * How the span ended: `next` (the next phase began), `finished` (the run finished),
   * `interrupted` (stopped at a safe point on request), `stopped` (the process ended without
   * recording it, e.g. killed; the span ends at its last recorded activity), `open` (nothing
   * recorded after it: the run is in this phase, or its process stopped; ends at its last activity).
   */
  ended: 'next' | 'finished' | 'interrupted' | 'stopped' | 'open';
}

export interface TimePoint {
  /** Start of the bucket (or the instant of a sample), ISO 8601. */
  at: string;
  value: number;
}

/** A measured quantity over time (throughput). */
export interface TimeSeries {
  key: string;
  label: string;
  unit: string;
  /** Width of each point's bucket; 0 for instantaneous samples. */
  bucketMs: number;
  points: TimePoint[];
}

export interface Throughput {
  /** Start of the first bucket (when the first copied batch was claimed); null when nothing was copied. */
  startedAt: string | null;
  endedAt: string | null;
  bucketMs: number;
  rowsPerSecond: TimeSeries;
  /** MB = 1024 × 1024 bytes, as everywhere else in cloudshift. */
  megabytesPerSecond: TimeSeries;
  /** Batches copied per bucket (same buckets). */
  batches: TimeSeries;
}

export interface MismatchedBatch {
  table: string;
  seq: number;
  status: 'mismatch' | 'failed';
  /** Half-open key range [low, high): arrays of key values as the server's text, page numbers for keyless tables, null for an open end. */
  keyLow: unknown;
  keyHigh: unknown;
  rows: number | null;
  attempts: number;
  error: string | null;
  finishedAt: string | null;
}

export interface HistoryEvent extends EventOverview {
  id: string;
}

export interface SwitchHistory {
  kind: 'cutover' | 'rollback';
  /** done (switched), aborted (undone: the application stayed), or still open. */
  state: string;
  startedAt: string;
  by: string;
  pauseMs: number | null;
  steps: Array<{ step: string; ms: number }>;
  reason: string | null;
}

export interface History {
  runId: string;
  phases: PhaseSpan[];
  throughput: Throughput;
  /** The live sync's lag over time (the highest sample in each bucket, in seconds); no points before it ran. */
  lag: TimeSeries & { startedAt: string | null };
  /** Every cutover and rollback of the run, oldest first: outcome, write pause, steps or reason. */
  switches: SwitchHistory[];
  mismatches: { total: number; listed: MismatchedBatch[] };
  /** The full event log of the run, oldest first. */
  events: HistoryEvent[];
}

/** The lag series; empty in a state store made before lag samples were kept (read as it is, not migrated). */
async function lagOf(store: StateStore, runId: string, applied: readonly string[]): Promise<History['lag']> {
  const lag = applied.includes(LAG_MIGRATION)
    ? await lagBuckets(store.knex, runId, chooseBucketMs)
    : { first: null, bucketMs: 0, buckets: [] };
  const first = lag.first;
  return {
    key: 'lag',
    label: 'live sync lag',
    unit: 's',
    bucketMs: lag.bucketMs,
    startedAt: first?.toISOString() ?? null,
    // Buckets without a sample (no sync ran then) are left out, not drawn as zero lag.
    points: first
      ? lag.buckets.map((b) => ({ at: new Date(first.getTime() + b.bucket * lag.bucketMs).toISOString(), value: b.lagMs / 1000 }))
      : [],
  };
}

/** The run's switches; none in a state store made before live sync (read as it is, not migrated). */
async function switchesOf(store: StateStore, runId: string, applied: readonly string[]): Promise<SwitchRow[]> {
  return applied.includes(SYNC_MIGRATION) ? listSwitches(store.knex, runId) : [];
}

export async function readHistory(store: StateStore, runId: string): Promise<History> {
  const { applied } = await inspectSchema(store.db, store.schema);
  const [phaseRows, span, mismatched, events, switches, lag] = await Promise.all([
    runPhases(store.knex, runId),
    copySpan(store.knex, runId),
    mismatchedBatches(store.knex, runId, MISMATCH_LIST_LIMIT),
    runEvents(store.knex, runId),
    switchesOf(store, runId, applied),
    lagOf(store, runId, applied),
  ]);
  const spanMs = span.first && span.last ? Math.max(0, span.last.getTime() - span.first.getTime()) : 0;
  const bucketMs = chooseBucketMs(spanMs);
  const buckets = span.first ? await throughputBuckets(store.knex, runId, bucketMs) : [];
  return {
    runId,
    phases: phaseRows.map(phaseSpan),
    throughput: throughputSeries(span.first, spanMs, bucketMs, buckets),
    lag,
    switches: switches.map((w) => {
      const details = (w.details ?? {}) as { steps?: SwitchHistory['steps']; reason?: string };
      return {
        kind: w.kind,
        state: w.state,
        startedAt: w.started_at.toISOString(),
        by: w.by,
        pauseMs: w.pause_ms,
        steps: details.steps ?? [],
        reason: details.reason ?? null,
      };
    }),
    mismatches: {
      total: mismatched[0]?.total ?? 0,
      listed: mismatched.map((b) => ({
        table: b.relation,
        seq: b.seq,
        status: b.status,
        keyLow: b.key_low,
        keyHigh: b.key_high,
        rows: b.rows,
        attempts: b.attempts,
        error: b.error,
        finishedAt: b.finished_at?.toISOString() ?? null,
      })),
    },
    events: events.map((e) => ({
      id: String(e.id),
      at: e.at.toISOString(),
      kind: e.kind,
      message: e.message,
      who: `${e.os_user}@${e.host} (pid ${e.pid})`,
    })),
  };
}

/** The smallest nice bucket that keeps a span within MAX_POINTS buckets. */
export function chooseBucketMs(spanMs: number): number {
  for (const step of BUCKET_STEPS_MS) if (bucketCount(spanMs, step) <= MAX_POINTS) return step;
  return Math.ceil(spanMs / (MAX_POINTS - 1) / 86_400_000) * 86_400_000;
}

/** Number of buckets covering a span: at least one, and the last instant falls in the last one. */
export function bucketCount(spanMs: number, bucketMs: number): number {
  return Math.max(1, Math.floor(spanMs / bucketMs) + 1);
}

export function phaseSpan(row: RunPhaseRow): PhaseSpan {
  const start = row.started_at.getTime();
  let end: number;
  let ended: PhaseSpan['ended'];
  if (row.next_kind !== null && row.next_at !== null && row.next_kind !== 'run:resume') {
    end = row.next_at.getTime();
    ended = row.next_kind === 'run:done' ? 'finished' : row.next_kind === 'run:interrupted' ? 'interrupted' : 'next';
  } else {
    end = Math.max(start, row.last_activity?.getTime() ?? start);
    ended = row.next_kind === 'run:resume' ? 'stopped' : 'open';
  }
  return {
    phase: row.phase,
    startedAt: row.started_at.toISOString(),
    endedAt: new Date(end).toISOString(),
    durationMs: end - start,
    ended,
  };
}

/** Per-bucket sums → rates, with every bucket of the span present (empty buckets are zeros). */
export function throughputSeries(
  first: Date | null,
  spanMs: number,
  bucketMs: number,
  buckets: Array<{ bucket: number; batches: number; rows: number; bytes: number }>,
): Throughput {
  const series = (key: string, label: string, unit: string): TimeSeries => ({ key, label, unit, bucketMs, points: [] });
  const out: Throughput = {
    startedAt: first?.toISOString() ?? null,
    endedAt: first ? new Date(first.getTime() + spanMs).toISOString() : null,
    bucketMs,
    rowsPerSecond: series('rows-per-second', 'rows copied per second', 'rows/s'),
    megabytesPerSecond: series('megabytes-per-second', 'MB copied per second', 'MB/s'),
    batches: series('batches', 'batches copied', 'batches'),
  };
  if (!first) return out;
  const n = bucketCount(spanMs, bucketMs);
  const sums = Array.from({ length: n }, () => ({ batches: 0, rows: 0, bytes: 0 }));
  for (const b of buckets) {
    const slot = sums[Math.min(n - 1, Math.max(0, b.bucket))]!;
    slot.batches += b.batches;
    slot.rows += Number(b.rows);
    slot.bytes += Number(b.bytes);
  }
  const seconds = bucketMs / 1000;
  sums.forEach((s, i) => {
    const at = new Date(first.getTime() + i * bucketMs).toISOString();
    out.rowsPerSecond.points.push({ at, value: s.rows / seconds });
    out.megabytesPerSecond.points.push({ at, value: s.bytes / 1024 / 1024 / seconds });
    out.batches.points.push({ at, value: s.batches });
  });
  return out;
}
