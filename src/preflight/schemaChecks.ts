/**
 * What the schema replay will leave out (schema.skipped): indexes, constraints, views, functions
 * and triggers of the migrated tables that `run` does not create on the target, each with why.
 * The same reading of the source's catalogs as `run` does, in a read-only transaction.
 */
import type pg from 'pg';
import type { Plan } from '../plan/defaults.js';
import { planSelections, readSourceSchema, skippedLines } from '../target/postgres/schema/index.js';
import type { CheckList } from './types.js';

export async function checkSkippedSchema(source: pg.Client, plan: Plan, checks: CheckList): Promise<void> {
  const schema = await readSourceSchema(source, planSelections(plan), plan.sequences);
  if (schema.skipped.length === 0) {
    checks.pass(
      'schema.skipped',
      'source',
      'every index, constraint, view, function and trigger of the migrated tables is replayed on the target',
    );
    return;
  }
  for (const line of skippedLines(schema.skipped))
    checks.warn('schema.skipped', 'source', `${line}; create it on the target by hand if the application needs it`);
}
