/** `cloudshift status`: read-only view of a migration, once or redrawn with --watch. */
import { setTimeout as sleep } from 'node:timers/promises';
import { ExitCode, messageOf } from '../../errors.js';
import { redactValues } from '../../redact.js';
import { loadPlan } from '../../plan/parse.js';
import { resolveSecrets } from '../../plan/secrets.js';
import { StateStore } from '../../state/store.js';
import { readOverview, type SyncOverview } from '../../views/overview.js';
import type { LoadedPlan } from '../../plan/parse.js';
import { connect } from '../../pg/connect.js';
import { slotBacklog } from '../../sync/objects.js';
import type pg from 'pg';

/** How long status waits to reach the source for the slot's figures. */
const SOURCE_TIMEOUT_MS = 3_000;
import type { CliIO } from '../io.js';
import { renderStatus } from '../render/status.js';

export interface StatusFlags {
  json: boolean;
  watch: boolean;
  intervalMs: number;
}

export async function statusCommand(io: CliIO, file: string, flags: StatusFlags): Promise<number> {
  const loaded = await loadPlan(file);
  const secrets = resolveSecrets(loaded, io.env, ['state']);
  const store = await StateStore.open({ connectionString: secrets.state, schema: loaded.plan.state.schema, readOnly: true });
  try {
    for (;;) {
      const overview = await readOverview(store, loaded).catch((err: unknown) => {
        // Watching, a state store that fails over for a moment is said and tried again.
        if (!flags.watch) throw err;
        io.stderr.write(`cannot read the state store (${redactValues(messageOf(err), [secrets.state])}); trying again\n`);
        return null;
      });
      if (overview?.sync) overview.sync.readFromSource = await slotFromSource(loaded, io.env, overview.sync);
      if (overview && flags.json) io.stdout.write(`${JSON.stringify(overview, null, flags.watch ? 0 : 2)}\n`);
      else if (overview) {
        // On a terminal --watch redraws in place; elsewhere each refresh follows the last.
        if (flags.watch && io.stdout.isTTY) io.stdout.write('\x1b[H\x1b[2J');
        io.stdout.write(renderStatus(overview));
      }
      if (!flags.watch) return ExitCode.ok;
      try {
        await sleep(flags.intervalMs, undefined, io.signal ? { signal: io.signal } : {});
      } catch {
        return ExitCode.ok; // Ctrl-C ends watching
      }
    }
  } finally {
    await store.close();
  }
}

/**
 * With no process measuring the slot, what it holds on the source now: read there (read-only, a
 * short connect timeout), if this machine can reach the source with the plan's reference. A run
 * that died at midnight keeps its slot's WAL growing; at 2 a.m. that is the figure that matters.
 */
async function slotFromSource(loaded: LoadedPlan, env: CliIO['env'], sync: SyncOverview): Promise<SyncOverview['readFromSource']> {
  if (!sync.lagStale || sync.slotDropped || sync.slot === null) return null;
  let client: pg.Client | null = null;
  try {
    const { source } = resolveSecrets(loaded, env, ['source']);
    client = await connect({ role: 'source', connectionString: source, connectTimeoutMs: SOURCE_TIMEOUT_MS, readOnly: true });
    const st = await slotBacklog(client, sync.slot);
    return st && { at: new Date().toISOString(), retainedWalBytes: st.retainedBytes, walBehindBytes: st.behindBytes };
  } catch {
    // Not reachable from here (no reference resolved, a firewall): the state store's figures stand.
    return null;
  } finally {
    await client?.end().catch(() => undefined);
  }
}
