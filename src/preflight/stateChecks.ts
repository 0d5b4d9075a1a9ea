/** Read-only check of the state store: reachable, schema absent or of a version we know. */
import type pg from 'pg';
import type { LoadedPlan } from '../plan/parse.js';
import { quoteIdent } from '../plan/names.js';
import { inspectSchema } from '../state/migrations.js';
import type { CheckList } from './types.js';
import { movedSides, type DatabaseIdentity, type Side } from '../pg/identity.js';
import type { RunDatabases } from '../state/types.js';
import { tablesChanged } from '../engine/runState.js';

export async function checkState(
  client: pg.Client,
  loaded: LoadedPlan,
  checks: CheckList,
  reached: Partial<Record<Side, DatabaseIdentity>> = {},
): Promise<void> {
  const schema = loaded.plan.state.schema;
  const subject = `state store schema ${schema}`;
  const status = await inspectSchema(client, schema);
  if (!status.exists) {
    const canCreate = (await client.query<{ ok: boolean }>(`SELECT has_database_privilege(current_database(), 'CREATE') AS ok`)).rows[0]
      ?.ok;
    if (canCreate) checks.pass('state.store', subject, `reachable; schema ${schema} will be created by cloudshift run`);
    else
      checks.fail(
        'state.store',
        subject,
        `schema ${schema} does not exist and the user may not create schemas in this database: GRANT CREATE ON DATABASE … TO <user>, or set state.postgres`,
      );
    return;
  }
  if (status.unknown.length > 0) {
    checks.fail(
      'state.store',
      subject,
      `schema ${schema} was created by a newer cloudshift (migration ${status.unknown.join(', ')}); upgrade cloudshift`,
    );
    return;
  }
  if (status.pending.length > 0) {
    checks.pass(
      'state.store',
      subject,
      `reachable; schema ${schema} will be upgraded (${status.pending.length} migration${status.pending.length === 1 ? '' : 's'})`,
    );
  } else checks.pass('state.store', subject, `reachable; schema ${schema} is current`);

  const { rows } = await client.query<{ id: string; plan_fingerprint: string; phase: string; databases: RunDatabases | null }>(
    `SELECT id, plan_fingerprint, phase, details -> 'databases' AS databases FROM ${quoteIdent(schema)}.runs WHERE plan_name = $1 AND status = 'active'`,
    [loaded.plan.name],
  );
  const run = rows[0];
  // A run still in phase 'created' (nothing copied yet) goes on where the plan points now.
  const elsewhere = run?.phase === 'created' ? [] : movedSides(run?.databases ?? {}, reached);
  if (run && elsewhere.length > 0) {
    checks.fail(
      'state.run',
      subject,
      `run ${run.id} (phase ${run.phase}) began on other databases: ${elsewhere.map((m) => m.change).join('; ')}; cloudshift run will refuse to resume it unless --force`,
    );
  } else if (run && run.plan_fingerprint !== loaded.fingerprint) {
    const { rows: planned } = await client.query<{ relation: string }>(
      `SELECT DISTINCT relation FROM ${quoteIdent(schema)}.batches WHERE run_id = $1`,
      [run.id],
    );
    const changes = tablesChanged(
      planned.map((p) => p.relation),
      loaded,
    );
    if (run.phase === 'created')
      checks.pass('state.run', subject, `run ${run.id} has copied nothing yet: cloudshift run goes on with this version of the plan`);
    else if (changes.length > 0)
      checks.fail(
        'state.run',
        subject,
        `the plan ${changes.join(' and ')}, but run ${run.id} (phase ${run.phase}) planned its batches for the tables it had then: cloudshift run refuses it, --force too; undo that change, or end the run with cloudshift cleanup`,
      );
    else
      checks.warn(
        'state.run',
        subject,
        `run ${run.id} (phase ${run.phase}) began with a different version of this plan: cloudshift run will refuse to resume it unless --force`,
      );
  } else if (run) checks.pass('state.run', subject, `run ${run.id} is in progress (phase ${run.phase}); cloudshift run resumes it`);
}
