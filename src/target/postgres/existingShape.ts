/**
 * A table already on the target (created by hand, or left by an earlier migration) is kept as it
 * is, and the copy writes the source's columns into it. Binary COPY carries values as the server
 * holds them: a column of another type refuses them, or worse takes them as its own (an integer's
 * four bytes read as a real). So before anything is written, the existing table's columns are
 * compared with those the copy writes: same names, same types (schema, name and modifier, whatever
 * the search_path), nothing the copy leaves empty that must not be.
 */
import type pg from 'pg';
import { quoteQualified, type QualifiedName } from '../../plan/names.js';
import { writtenColumns, type TableInfo } from '../../source/introspect.js';

export interface CopiedColumn {
  name: string;
  /** format_type, as said to the operator. */
  type: string;
  /** Schema, type name and modifier: equal on both servers exactly when the types are. */
  typeKey: string;
}

/** The columns the copy writes to the target: non-generated source columns but `omit`, then `add` (type text). */
export function copiedColumns(info: TableInfo, omit: readonly string[] = [], add: readonly string[] = []): CopiedColumn[] {
  return [
    ...writtenColumns(info, omit).map((c) => ({ name: c.name, type: c.type, typeKey: `${c.typeSchema}.${c.typeName}(${c.typmod})` })),
    ...add.map((name) => ({ name, type: 'text', typeKey: 'pg_catalog.text(-1)' })),
  ];
}

/** How an existing target table differs from what the copy writes into it; [] when it is absent or fits. */
export async function shapeProblems(target: pg.Client, table: QualifiedName, copied: CopiedColumn[]): Promise<string[]> {
  const { rows } = await target.query<{ name: string; type: string; type_key: string; required: boolean; generated: boolean }>(
    `SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type,
            tn.nspname || '.' || ty.typname || '(' || a.atttypmod || ')' AS type_key,
            a.attnotnull AND NOT a.atthasdef AND a.attidentity = '' AND a.attgenerated = '' AS required,
            a.attgenerated <> '' AS generated
       FROM pg_attribute a
       JOIN pg_type ty ON ty.oid = a.atttypid
       JOIN pg_namespace tn ON tn.oid = ty.typnamespace
      WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
      ORDER BY a.attnum`,
    [quoteQualified(table)],
  );
  if (rows.length === 0) return [];
  const onTarget = new Map(rows.map((r) => [r.name, r]));
  const written = new Set(copied.map((c) => c.name));
  const problems: string[] = [];
  for (const c of copied) {
    const t = onTarget.get(c.name);
    if (!t) problems.push(`column "${c.name}" (${c.type}) is missing`);
    else if (t.generated) problems.push(`column "${c.name}" is generated on the target, and the copy writes it`);
    else if (t.type_key !== c.typeKey) problems.push(`column "${c.name}" is ${t.type} on the target and ${c.type} on the source`);
  }
  for (const r of rows)
    if (r.required && !written.has(r.name))
      problems.push(`column "${r.name}" is NOT NULL without a default, and the copy does not write it`);
  return problems;
}

export const SHAPE_HINT = 'drop the target table and let cloudshift run create it, or alter it to match the source';
