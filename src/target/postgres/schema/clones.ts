/**
 * Partition copies of constraints. When a PRIMARY KEY, UNIQUE or FOREIGN KEY is added to a
 * partitioned table (or references one), PostgreSQL creates a copy on every partition (and, for a
 * foreign key, one per referenced partition) under a generated name. These are never created by
 * us; this module renames them to the names they have on the source. Invariants:
 * - copies are found by structure (table, referenced table, parent constraint), never by name;
 * - renaming goes through temporary names first, so a swap of two generated names cannot collide;
 * - running it again finds every name already right and does nothing.
 */
import type pg from 'pg';
import { quoteIdent, quoteQualified, type QualifiedName } from '../../../plan/names.js';
import { key } from './catalog.js';
import type { ConstraintDef } from './model.js';

export function describeCloneRenames(c: ConstraintDef): string {
  const list = c.clones.map((x) => `${quoteQualified(x.table)}.${quoteIdent(x.name)}`).join(', ');
  return `rename the partition copies of ${quoteIdent(c.name)} on ${quoteQualified(c.table)} to their source names: ${list}`;
}

export async function renameClones(client: pg.Client, c: ConstraintDef): Promise<void> {
  const oidOf = new Map<string, number>();
  const constraintKey = (table: QualifiedName, name: string) => `${key(table)}:${name}`;
  const top = await client.query<{ oid: number }>(
    `SELECT c.oid::int AS oid FROM pg_constraint c WHERE c.conrelid = to_regclass($1) AND c.conname = $2`,
    [quoteQualified(c.table), c.name],
  );
  if (!top.rows[0]) return;
  oidOf.set(constraintKey(c.table, c.name), top.rows[0].oid);

  const found: Array<{ table: QualifiedName; current: string; wanted: string; oid: number }> = [];
  for (const clone of c.clones) {
    const parent = oidOf.get(constraintKey(clone.parentTable, clone.parentName));
    if (parent === undefined) continue;
    const { rows } = await client.query<{ oid: number; name: string }>(
      `SELECT c.oid::int AS oid, c.conname AS name FROM pg_constraint c
        WHERE c.conparentid = $1 AND c.conrelid = to_regclass($2)
          AND c.confrelid = coalesce(to_regclass($3)::oid, 0::oid)
        ORDER BY c.oid LIMIT 1`,
      [parent, quoteQualified(clone.table), clone.references ? quoteQualified(clone.references) : null],
    );
    const row = rows[0];
    if (!row) continue;
    oidOf.set(constraintKey(clone.table, clone.name), row.oid);
    found.push({ table: clone.table, current: row.name, wanted: clone.name, oid: row.oid });
  }
  const wrong = found.filter((f) => f.current !== f.wanted);
  const rename = (table: QualifiedName, from: string, to: string) =>
    client.query(`ALTER TABLE ${quoteQualified(table)} RENAME CONSTRAINT ${quoteIdent(from)} TO ${quoteIdent(to)}`);
  for (const f of wrong) await rename(f.table, f.current, `cloudshift_rename_${f.oid}`);
  for (const f of wrong) await rename(f.table, `cloudshift_rename_${f.oid}`, f.wanted);
}
