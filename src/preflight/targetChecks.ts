/** Read-only checks against the target database: version, extensions, and the plan's tables. */
import type pg from 'pg';
import { migratedTables, type Plan } from '../plan/defaults.js';
import { displayName, quoteQualified, type QualifiedName } from '../plan/names.js';
import { copiedColumns, existingShape, SHAPE_HINT, type CopiedColumn } from '../target/postgres/existingShape.js';
import { foreignKeysOn } from '../target/postgres/foreignKeys.js';
import type { SourceFacts } from './sourceChecks.js';
import type { CheckList } from './types.js';

export async function checkTarget(client: pg.Client, plan: Plan, source: SourceFacts | null, checks: CheckList): Promise<void> {
  const { rows } = await client.query<{ num: string; version: string }>(
    `SELECT current_setting('server_version_num') AS num, current_setting('server_version') AS version`,
  );
  const t = rows[0]!;
  const targetMajor = Math.floor(Number(t.num) / 10000);
  checks.pass('target.connect', 'target', `connected to PostgreSQL ${t.version}`);
  if (source) {
    const sourceMajor = Math.floor(source.versionNum / 10000);
    if (targetMajor < sourceMajor) {
      checks.warn(
        'target.version',
        'target',
        `the target (PostgreSQL ${targetMajor}) is older than the source (PostgreSQL ${sourceMajor}): features the source uses may be missing`,
      );
    } else checks.pass('target.version', 'target', `PostgreSQL ${targetMajor} on the target, ${sourceMajor} on the source`);

    const available = new Set((await client.query<{ name: string }>(`SELECT name FROM pg_available_extensions`)).rows.map((r) => r.name));
    const missing = source.extensions.filter((e) => !available.has(e));
    if (missing.length > 0) {
      checks.fail(
        'target.extensions',
        'target',
        `extension${missing.length === 1 ? '' : 's'} used on the source but not available on the target: ${missing.join(', ')} (on Azure, allow them in the azure.extensions server parameter)`,
      );
    } else if (source.extensions.length > 0) {
      checks.pass('target.extensions', 'target', `extensions used on the source are available: ${source.extensions.join(', ')}`);
    } else checks.pass('target.extensions', 'target', 'the source uses no extensions');
  }

  const names = migratedTables(plan);
  const seen = new Set<string>();
  for (const name of names) {
    const subject = displayName(name);
    if (seen.has(subject)) continue;
    seen.add(subject);
    // What the copy writes into it, when the source could tell.
    const info = source?.tables.get(subject);
    const doc = plan.documents.find((d) => displayName(d.table) === subject);
    const copied = info && info.kind !== 'other' ? copiedColumns(info, doc ? [doc.content] : [], doc ? [doc.keepColumn] : []) : null;
    await checkTargetTable(client, plan, name, subject, copied, checks);
  }
  for (const k of await foreignKeysOn(client, names)) {
    checks.warn(
      'target.foreign_key',
      displayName(k.table),
      `has foreign key ${k.name} on the target: cloudshift run sets it aside for the copy (batches of a table can commit before the rows they name) and puts it back after the data`,
    );
  }
}

async function checkTargetTable(
  client: pg.Client,
  plan: Plan,
  name: QualifiedName,
  subject: string,
  copied: CopiedColumn[] | null,
  checks: CheckList,
): Promise<void> {
  const { rows } = await client.query<{ exists: boolean }>(`SELECT to_regclass($1) IS NOT NULL AS exists`, [quoteQualified(name)]);
  if (!rows[0]?.exists) {
    checks.pass('target.table', subject, 'absent on the target: cloudshift run will create it');
    return;
  }
  let hasRows: boolean;
  try {
    hasRows = (await client.query<{ has: boolean }>(`SELECT EXISTS (SELECT 1 FROM ${quoteQualified(name)}) AS has`)).rows[0]!.has;
  } catch (err) {
    checks.fail('target.table', subject, `exists on the target but cannot be read: ${(err as Error).message}`);
    return;
  }
  if (copied) {
    const { problems, wider } = await existingShape(client, name, copied);
    if (problems.length > 0)
      checks.fail(
        'target.columns',
        subject,
        `exists on the target with other columns than the source's: ${problems.join('; ')}: ${SHAPE_HINT}`,
      );
    else if (wider.length > 0 && plan.sync.mode === 'logical')
      // After cutover the application writes to the target; a rollback puts its writes back on the source.
      checks.warn(
        'target.columns',
        subject,
        `exists on the target with wider columns than the source's: ${wider.join(', ')}: after cutover the application can write values there that a rollback cannot put back on the source`,
      );
    else
      checks.pass(
        'target.columns',
        subject,
        `exists on the target with the ${copied.length} columns the copy writes, of the same types${wider.length > 0 ? ` or wider (${wider.join(', ')})` : ''}`,
      );
  }
  if (!hasRows) checks.pass('target.table', subject, 'exists on the target and is empty');
  else if (plan.target.existingData === 'truncate')
    checks.warn('target.table', subject, 'exists on the target with rows: cloudshift run will TRUNCATE it (target.existingData: truncate)');
  else
    checks.fail(
      'target.table',
      subject,
      'exists on the target and already holds rows: cloudshift run stops before writing; empty it, or set target.existingData: truncate',
    );
}
