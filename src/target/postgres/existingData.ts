/**
 * Before a new run writes anything: target tables whose columns do not fit the copy stop it
 * (exit 3), and so do those that already hold rows, unless the plan says
 * `target.existingData: truncate`.
 */
import type pg from 'pg';
import { PreconditionError } from '../../errors.js';
import { displayName, quoteQualified, type QualifiedName } from '../../plan/names.js';
import { existingShape, SHAPE_HINT, type CopiedColumn } from './existingShape.js';

export async function tablesWithRows(target: pg.Client, tables: QualifiedName[]): Promise<QualifiedName[]> {
  const found: QualifiedName[] = [];
  for (const t of tables) {
    const { rows } = await target.query<{ exists: boolean }>(`SELECT to_regclass($1) IS NOT NULL AS exists`, [quoteQualified(t)]);
    if (!rows[0]?.exists) continue;
    const has = await target.query<{ has: boolean }>(`SELECT EXISTS (SELECT 1 FROM ${quoteQualified(t)}) AS has`);
    if (has.rows[0]?.has) found.push(t);
  }
  return found;
}

export async function handleExistingData(
  target: pg.Client,
  tables: Array<{ name: QualifiedName; copied: CopiedColumn[] }>,
  policy: 'refuse' | 'truncate',
): Promise<QualifiedName[]> {
  for (const t of tables) {
    const { problems } = await existingShape(target, t.name, t.copied);
    if (problems.length > 0)
      throw new PreconditionError(
        `${displayName(t.name)} already exists on the target with other columns than the source's: ${problems.join('; ')}; nothing was written`,
        { hint: SHAPE_HINT },
      );
  }
  const full = await tablesWithRows(
    target,
    tables.map((t) => t.name),
  );
  if (full.length === 0) return [];
  if (policy === 'refuse') {
    throw new PreconditionError(`the target already holds rows in ${full.map(displayName).join(', ')}; nothing was written`, {
      hint: 'empty those tables, or set target.existingData: truncate in the plan to have cloudshift empty them',
    });
  }
  await target.query(`TRUNCATE ${full.map(quoteQualified).join(', ')}`);
  return full;
}
