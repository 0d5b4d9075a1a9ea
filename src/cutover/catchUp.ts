/**
 * The stream a switch drains: run here (no other process syncs this run) or by a `cloudshift run`
 * in another terminal or on another machine, which cutover coordinates with through the state
 * store (the applied position it writes, the run's phase it polls). Either way the switch only
 * waits: for the lag to fall under `maxLag` before pausing, for the fence to be applied inside
 * the pause.
 */
import { PreconditionError, messageOf } from '../errors.js';
import { delay } from '../embedded/util.js';
import { appliedPosition } from '../sync/progress.js';
import { runForwardSync } from '../sync/forward.js';
import { originPosition, reverseObjects, runReverseSync } from '../sync/reverse.js';
import { formatLsn, type Lsn } from '../sync/lsn.js';
import type { SyncLoopResult, SyncStats } from '../sync/syncLoop.js';
import { syncRow } from '../state/sql/sync.js';
import type { SwitchContext } from './context.js';

export interface CatchUp {
  /** Another process streams (forward only). */
  readonly elsewhere: boolean;
  waitLag(maxLagMs: number, timeoutMs: number): Promise<void>;
  /** Resolves true once `fence` is applied, false at `deadline` (performance.now()). */
  waitApplied(fence: Lsn, deadline: number): Promise<boolean>;
  /** Stops a stream run here (at a transaction boundary). */
  stop(): Promise<void>;
  /** The position applied now, as far as known (for the drain's report). */
  appliedNow(): Promise<Lsn | null>;
}

const HEARTBEAT_MS = 100;
const POLL_MS = 5;

/** Forward: streams here when this process could take the run's lock, else follows the other process. */
export async function forwardCatchUp(ctx: SwitchContext): Promise<CatchUp> {
  const { store, run } = ctx;
  const position = async () => appliedPosition(store.pool, store.schema, run.id);
  if (!(await store.tryLock(`cloudshift.run:${run.id}`))) {
    return {
      elsewhere: true,
      async waitLag(maxLagMs, timeoutMs) {
        const end = Date.now() + timeoutMs;
        for (;;) {
          const row = await syncRow(store.knex, run.id);
          // Judged by the state store's clock, which wrote it, not this host's.
          const fresh = row?.measuredSecondsAgo != null && row.measuredSecondsAgo < 5;
          if (fresh && row.lagMs !== null && row.lagMs < maxLagMs) return;
          if (Date.now() > end) {
            throw new PreconditionError(
              fresh
                ? `the sync running in another process lags ${row.lagMs ?? '?'} ms, not under cutover.maxLag (${maxLagMs} ms), after ${timeoutMs / 1000} s`
                : `another cloudshift process holds run ${run.id}, but it is not syncing (no lag measured in the last 5 s)`,
              { hint: 'wait for `cloudshift status` to show the lag under maxLag, then cut over again' },
            );
          }
          await delay(100);
        }
      },
      waitApplied: (fence, deadline) => pollPosition(position, fence, deadline),
      stop: () => Promise.resolve(),
      appliedNow: position,
    };
  }
  return local(ctx, (stream) => runForwardSync({ ...stream, store, runId: run.id, workerId: ctx.me }), position);
}

/** Reverse (rollback): always streamed here, from the reverse slot the cutover made. */
export function reverseCatchUp(ctx: SwitchContext, from: Lsn): CatchUp {
  const origin = reverseObjects(ctx.plan).origin.name;
  const start = (stream: StreamOptions) =>
    runReverseSync({
      ...stream,
      from,
      onDivergence: async (d) => {
        ctx.say(`warning: reverse sync divergence: ${d.table} ${d.operation} matched no row on the source (${d.key})`);
        await ctx.store.appendEvent(
          ctx.run.id,
          'rollback:divergence',
          `${d.table}: ${d.operation} at ${formatLsn(d.lsn)} matched no row on the source`,
          {
            table: d.table,
            key: d.key,
          },
        );
      },
    });
  return local(ctx, start, () => originPosition(ctx.clients.source, origin));
}

/** What both streams run here share: the plan, fast heartbeats, a fence set later, stats, a stop. */
interface StreamOptions {
  plan: SwitchContext['plan'];
  secrets: SwitchContext['secrets'];
  tasks: SwitchContext['tasks'];
  heartbeatMs: number;
  abortSignal: AbortSignal;
  untilFence: () => Lsn | null;
  onStats: (s: SyncStats) => void;
  onWarning: (m: string) => void;
}

function local(ctx: SwitchContext, start: (o: StreamOptions) => Promise<SyncLoopResult>, position: () => Promise<Lsn | null>): CatchUp {
  const ac = new AbortController();
  let fence: Lsn | null = null;
  let latest: SyncStats | null = null;
  const stats = () => latest;
  const setFence = (f: Lsn) => {
    fence = f;
  };
  const running = start({
    plan: ctx.plan,
    secrets: ctx.secrets,
    tasks: ctx.tasks,
    heartbeatMs: HEARTBEAT_MS,
    abortSignal: ac.signal,
    untilFence: () => fence,
    onStats: (s) => {
      latest = s;
    },
    onWarning: (m) => ctx.say(`warning: ${m}`),
  });
  let failure: unknown = null;
  // The stream itself ends at the fence (a non-transactional message: a replication origin does
  // not record it, so the reverse stream's position alone would not show it).
  let atFence = false;
  const settled = running.then(
    (r) => {
      if (r.reason === 'fence') atFence = true;
      return r;
    },
    (err: unknown) => {
      failure = err;
      return null;
    },
  );
  const check = () => {
    if (failure) throw failure;
  };
  return {
    elsewhere: false,
    async waitLag(maxLagMs, timeoutMs) {
      const end = Date.now() + timeoutMs;
      for (;;) {
        check();
        const lag = stats()?.lagMs;
        if (lag !== null && lag !== undefined && lag < maxLagMs) return;
        if (Date.now() > end) {
          throw new PreconditionError(
            `the sync did not catch up under cutover.maxLag (${maxLagMs} ms) within ${timeoutMs / 1000} s (lag ${lag ?? 'unknown'} ms)`,
            {
              hint: 'let `cloudshift run --until synced` catch up first, then switch',
            },
          );
        }
        await delay(50);
      }
    },
    async waitApplied(fence, deadline) {
      setFence(fence);
      const r = await pollPosition(
        async () => {
          check();
          return atFence ? fence : position();
        },
        fence,
        deadline,
      );
      return r;
    },
    appliedNow: () => Promise.resolve(stats()?.applied ?? null),
    async stop() {
      ac.abort();
      await settled;
      if (failure) throw new Error(`the sync failed: ${messageOf(failure)}`, { cause: failure });
    },
  };
}

async function pollPosition(position: () => Promise<Lsn | null>, fence: Lsn, deadline: number): Promise<boolean> {
  for (;;) {
    const at = await position();
    if (at !== null && at >= fence) return true;
    if (performance.now() > deadline) return false;
    await delay(POLL_MS);
  }
}
