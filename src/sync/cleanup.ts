/**
 * `cloudshift cleanup`: drops every slot, publication and replication origin the plan's run
 * created, on either side, whether or not the ledger recorded it as created (the plan's own slot
 * and publication names are always checked too). A run not cut over is ended as aborted; a run
 * cut over is finished. Write fences stay: after a cutover the source must stay read-only.
 */
import type pg from 'pg';
import type { LoadedPlan } from '../plan/parse.js';
import { resolveSecrets, type Env } from '../plan/secrets.js';
import { connect } from '../pg/connect.js';
import { PreconditionError } from '../errors.js';
import { StateStore } from '../state/store.js';
import { requireRunDatabases } from '../engine/runDatabases.js';
import { latestSwitch, liveObjects } from '../state/sql/sync.js';
import { dropObject, type ReplicationObject } from './objects.js';
import { forwardObjects, ledger } from './forward.js';
import { reverseObjects } from './reverse.js';

export interface CleanupResult {
  runId: string;
  dropped: ReplicationObject[];
  runStatus: string;
}

export async function cleanupRun(loaded: LoadedPlan, env: Env): Promise<CleanupResult> {
  const { plan } = loaded;
  const secrets = resolveSecrets(loaded, env, ['source', 'target', 'state']);
  const store = await StateStore.open({ connectionString: secrets.state, schema: plan.state.schema });
  const clients: Partial<Record<'source' | 'target', pg.Client>> = {};
  try {
    await store.migrate();
    const run = (await store.getActiveRun(plan.name)) ?? (await store.getLatestRun(plan.name));
    if (!run) throw new PreconditionError(`plan ${plan.name} has no run: there is nothing to clean up`);
    await store.lockRun(run);
    // Not while a cutover or rollback runs: it creates the stream it switches to, which nothing would drop.
    await store.lockSwitch(run);
    // Nor after one that was killed half-way: its undo (PgBouncer resumed, a fence lifted) needs the run.
    const last = await latestSwitch(store.knex, run.id);
    if (run.status === 'active' && last && last.state !== 'done' && last.state !== 'aborted') {
      throw new PreconditionError(`a ${last.kind} of run ${run.id} did not end (it stopped at ${last.state}); nothing was dropped`, {
        hint: `run \`cloudshift ${last.kind}\` again (or \`cloudshift run\`), which finishes or undoes it, never leaving the application paused or a side read-only; then clean up`,
      });
    }
    // An active run's objects are dropped only on its own databases (either side may be down).
    if (run.status === 'active') await requireRunDatabases(store, run, secrets, true);
    const recorded = await liveObjects(store.knex, run.id);
    const fwd = forwardObjects(plan);
    const rev = reverseObjects(plan);
    const candidates: ReplicationObject[] = [...recorded, fwd.slot, fwd.publication, rev.slot, rev.publication, rev.origin].filter(
      (o) => o.kind !== 'write-fence',
    );
    const seen = new Set<string>();
    const dropped: ReplicationObject[] = [];
    const book = ledger(store, run.id);
    // Slots before publications: a slot is what holds WAL.
    const order = { slot: 0, origin: 1, publication: 2, 'write-fence': 3 } as const;
    for (const o of candidates.sort((a, b) => order[a.kind] - order[b.kind])) {
      const id = `${o.side}/${o.kind}/${o.name}`;
      if (seen.has(id)) continue;
      seen.add(id);
      clients[o.side] ??= await connect({ role: o.side, connectionString: o.side === 'source' ? secrets.source : secrets.target });
      const obj = { side: o.side, kind: o.kind, name: o.name, direction: o.direction };
      if (await dropObject(clients[o.side]!, book, obj)) dropped.push(obj);
    }
    let runStatus = run.status as string;
    if (run.status === 'active') {
      runStatus = run.phase === 'cutover' ? 'finished' : 'aborted';
      await store.updateRun(run.id, { status: runStatus as 'finished' | 'aborted', ...(run.phase === 'cutover' ? { phase: 'done' } : {}) });
      // The migration's end, as a run without live sync records it at its own.
      if (runStatus === 'finished')
        await store.appendEvent(run.id, 'run:done', 'migration finished: cut over, and the replication objects dropped');
    }
    await store.appendEvent(
      run.id,
      'cleanup',
      dropped.length ? `dropped ${dropped.map((d) => `${d.kind} ${d.name} (${d.side})`).join(', ')}` : 'nothing left to drop',
      { dropped, runStatus },
    );
    return { runId: run.id, dropped, runStatus };
  } finally {
    await Promise.allSettled(Object.values(clients).map((c) => c.end()));
    await store.close();
  }
}
