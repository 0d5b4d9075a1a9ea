/**
 * What the schema replay will leave out (schema.skipped): indexes, constraints, views, functions
 * and triggers of the migrated tables that `run` does not create on the target, each with why.
 * The same reading of the source's catalogs as `run` does, in a read-only transaction.
 */
import type pg from 'pg';
import type { Plan } from '../plan/defaults.js';
import { MIN_SCHEMA_VERSION, planSelections, readSourceSchema, skippedLines } from '../target/postgres/schema/index.js';
import type { CheckList } from './types.js';

export async function checkSkippedSchema(source: pg.Client, versionNum: number, plan: Plan, checks: CheckList): Promise<void> {
  if (versionNum < MIN_SCHEMA_VERSION) {
    checks.fail(
      'source.version',
      'source',
      `the source runs PostgreSQL ${Math.floor(versionNum / 10000)}: cloudshift reads the schema of PostgreSQL 12 or newer (run refuses it too, exit 3)`,
    );
    return;
  }
  const schema = await readSourceSchema(source, planSelections(plan), plan.sequences);
  if (schema.skipped.length === 0) {
    checks.pass(
      'schema.skipped',
      'source',
      'every index, constraint, view, function and trigger of the migrated tables is replayed on the target',
    );
    return;
  }
  for (const line of skippedLines(schema.skipped)) checks.warn('schema.skipped', 'source', line);
}
