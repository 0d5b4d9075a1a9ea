/**
 * What a cutover or rollback works with: the state store and the run, a connection to each side,
 * the plan's tables, the application switch, and the ledger objects are recorded in. Opened once
 * per command; close() releases everything (and with it the switch lock).
 */
import { settleRunDatabases } from '../engine/runDatabases.js';
import { databaseIdentity } from '../pg/identity.js';
import path from 'node:path';
import type pg from 'pg';
import type { Plan } from '../plan/defaults.js';
import type { LoadedPlan } from '../plan/parse.js';
import { resolveSecrets, type Env, type Secrets } from '../plan/secrets.js';
import { connect } from '../pg/connect.js';
import { PreconditionError, UsageError } from '../errors.js';
import { StateStore } from '../state/store.js';
import type { RunRow } from '../state/types.js';
import { workerId, whoAmI } from '../state/who.js';
import { tableTasks } from '../engine/planBatches.js';
import type { TableTask } from '../engine/tableTask.js';
import type { EngineHooks } from '../engine/hooks.js';
import { ledger } from '../sync/forward.js';
import { FLUSH_SETTINGS, type ObjectLedger, type Side } from '../sync/objects.js';
import { openSwitch, routesOf, type AppSwitch, type Routes } from './appSwitch.js';

export interface SwitchContext {
  loaded: LoadedPlan;
  env: Env;
  plan: Plan;
  secrets: Secrets;
  store: StateStore;
  run: RunRow;
  clients: Record<Side, pg.Client>;
  tasks: TableTask[];
  app: AppSwitch;
  routes: Routes;
  book: ObjectLedger;
  me: string;
  hooks: EngineHooks;
  /** Progress lines for the operator (the CLI prints them to stderr). */
  say: (message: string) => void;
  /**
   * Why the state-store session holding the switch lock ended, if it did (asked of the session
   * now): another command may then hold the lock and be recovering this switch.
   */
  switchLockLost(): Promise<string | null>;
  close(): Promise<void>;
}

export interface OpenContextOptions {
  env: Env;
  hooks?: EngineHooks;
  say?: (message: string) => void;
}

export async function openSwitchContext(loaded: LoadedPlan, o: OpenContextOptions): Promise<SwitchContext> {
  const { plan } = loaded;
  if (plan.sync.mode !== 'logical') {
    throw new UsageError('cutover and rollback need live sync: the plan has sync.mode none', {
      hint: 'set `sync: { mode: logical }` and run `cloudshift run` before switching',
    });
  }
  const sw = plan.cutover.switch;
  if (!sw) {
    throw new UsageError('the plan has no cutover.switch: cloudshift does not know how to point the application at the target', {
      hint: 'add `cutover: { switch: { pgbouncer: { admin, database, config } } }` (or `command: { run }`) to the plan',
    });
  }
  const secrets = resolveSecrets(loaded, o.env);
  const store = await StateStore.open({ connectionString: secrets.state, schema: plan.state.schema });
  const opened: Array<{ end(): Promise<void> }> = [];
  try {
    await store.migrate();
    const run = await store.getActiveRun(plan.name);
    if (!run) {
      throw new PreconditionError(`plan ${plan.name} has no active run: there is nothing to switch`, {
        hint: 'start the migration with `cloudshift run`',
      });
    }
    await store.lockSwitch(run);
    let lockLost: string | null = null;
    store.onSessionLost((why) => (lockLost = why));
    // Either side writes the fence message: flushed at once (see emitMessage).
    const source = await connect({
      role: 'source',
      connectionString: secrets.source,
      applicationName: 'cloudshift switch',
      settings: FLUSH_SETTINGS,
    });
    opened.push(source);
    const target = await connect({
      role: 'target',
      connectionString: secrets.target,
      applicationName: 'cloudshift switch',
      settings: FLUSH_SETTINGS,
    });
    opened.push(target);
    // Never a switch (or the recovery of one) on other databases than the run's.
    await settleRunDatabases(
      store,
      run.id,
      { source: await databaseIdentity(source), target: await databaseIdentity(target) },
      { role: 'other' },
    );
    const routes = routesOf(secrets);
    const resolvedSwitch = sw.kind === 'pgbouncer' ? { ...sw, config: path.resolve(loaded.dir, sw.config) } : sw;
    const app = await openSwitch(resolvedSwitch, { routes, secrets, azure: plan.azure, env: o.env, ...(o.say ? { echo: o.say } : {}) });
    opened.push({ end: () => app.close() });
    const tasks = await tableTasks(source, plan);
    return {
      loaded,
      env: o.env,
      plan,
      secrets,
      store,
      run,
      clients: { source, target },
      tasks,
      app,
      routes,
      book: ledger(store, run.id),
      me: workerId(whoAmI()),
      hooks: o.hooks ?? {},
      say: o.say ?? (() => undefined),
      switchLockLost: async () => {
        await store.pingSession();
        return lockLost;
      },
      close: async () => {
        await Promise.allSettled(opened.map((c) => c.end()));
        await store.close();
      },
    };
  } catch (err) {
    await Promise.allSettled(opened.map((c) => c.end()));
    await store.close();
    throw err;
  }
}

/** "the target (host:port/db)", for messages (no secrets). */
export function describeSide(ctx: Pick<SwitchContext, 'routes'>, side: Side): string {
  const r = ctx.routes[side];
  return `the ${side} (${r.host}:${r.port}/${r.dbname})`;
}
