/**
 * A table already on the target (created by hand, or left by an earlier migration) is kept as it
 * is, and the copy writes the source's columns into it. Binary COPY carries values as the server
 * holds them: a column of another type refuses them, or worse takes them as its own (an integer's
 * four bytes read as a real). So before anything is written, the existing table's columns are
 * compared with those the copy writes: same names, same types (schema, name and modifier, whatever
 * the search_path) or a wider modifier of the same type that holds every value unchanged (WIDER),
 * nothing the copy leaves empty that must not be.
 */
import type pg from 'pg';
import { quoteQualified, type QualifiedName } from '../../plan/names.js';
import { writtenColumns, type TableInfo } from '../../source/introspect.js';

export interface CopiedColumn {
  name: string;
  /** format_type, as said to the operator. */
  type: string;
  /** Schema and name of the type: equal on both servers exactly when the types are. */
  typeKey: string;
  /** The type's modifier (atttypmod), -1 for none. */
  typmod: number;
}

/** The columns the copy writes to the target: non-generated source columns but `omit`, then `add` (type text). */
export function copiedColumns(info: TableInfo, omit: readonly string[] = [], add: readonly string[] = []): CopiedColumn[] {
  return [
    ...writtenColumns(info, omit).map((c) => ({ name: c.name, type: c.type, typeKey: `${c.typeSchema}.${c.typeName}`, typmod: c.typmod })),
    ...add.map((name) => ({ name, type: 'text', typeKey: 'pg_catalog.text', typmod: -1 })),
  ];
}

/**
 * Types whose modifier only limits the values (the values and their binary form are the same
 * whatever it is): a target column of the type without a modifier, or with one that admits every
 * value the source's admits, holds each value as it is. Not char(n), which pads to its length.
 */
const atLeast = (source: number, target: number) => target >= source;
const WIDER: Record<string, (source: number, target: number) => boolean> = {
  // length (+ 4 for varchar)
  'pg_catalog.varchar': atLeast,
  'pg_catalog.varbit': atLeast,
  // ((precision << 16) | scale) + 4: the same scale, at least the precision
  'pg_catalog.numeric': (s, t) => ((t - 4) & 0xffff) === ((s - 4) & 0xffff) && (t - 4) >> 16 >= (s - 4) >> 16,
  // fractional digits of the seconds
  'pg_catalog.timestamp': atLeast,
  'pg_catalog.timestamptz': atLeast,
  'pg_catalog.time': atLeast,
  'pg_catalog.timetz': atLeast,
};

/** A target column of type `typeKey(typmod)` holds every value of the copied column unchanged. */
function holds(c: CopiedColumn, typeKey: string, typmod: number): boolean {
  if (typeKey === c.typeKey && typmod === c.typmod) return true;
  // varchar(n) into text: the same values, the same binary form.
  if (typeKey === 'pg_catalog.text' && c.typeKey === 'pg_catalog.varchar') return true;
  const wider = WIDER[c.typeKey];
  if (typeKey !== c.typeKey || wider === undefined) return false;
  return typmod === -1 || (c.typmod !== -1 && wider(c.typmod, typmod));
}

export interface TableShape {
  /** How an existing target table differs from what the copy writes into it; [] when it is absent or fits. */
  problems: string[];
  /** Columns that fit but are wider on the target, e.g. `note (text; character varying(40) on the source)`. */
  wider: string[];
}

export async function existingShape(target: pg.Client, table: QualifiedName, copied: CopiedColumn[]): Promise<TableShape> {
  const { rows } = await target.query<{
    name: string;
    type: string;
    type_key: string;
    typmod: number;
    required: boolean;
    generated: boolean;
  }>(
    `SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type,
            tn.nspname || '.' || ty.typname AS type_key, a.atttypmod AS typmod,
            a.attnotnull AND NOT a.atthasdef AND a.attidentity = '' AND a.attgenerated = '' AS required,
            a.attgenerated <> '' AS generated
       FROM pg_attribute a
       JOIN pg_type ty ON ty.oid = a.atttypid
       JOIN pg_namespace tn ON tn.oid = ty.typnamespace
      WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
      ORDER BY a.attnum`,
    [quoteQualified(table)],
  );
  if (rows.length === 0) return { problems: [], wider: [] };
  const onTarget = new Map(rows.map((r) => [r.name, r]));
  const written = new Set(copied.map((c) => c.name));
  const problems: string[] = [];
  const wider: string[] = [];
  for (const c of copied) {
    const t = onTarget.get(c.name);
    if (!t) problems.push(`column "${c.name}" (${c.type}) is missing`);
    else if (t.generated) problems.push(`column "${c.name}" is generated on the target, and the copy writes it`);
    else if (!holds(c, t.type_key, t.typmod)) problems.push(`column "${c.name}" is ${t.type} on the target and ${c.type} on the source`);
    else if (t.type !== c.type) wider.push(`${c.name} (${t.type}; ${c.type} on the source)`);
  }
  for (const r of rows)
    if (r.required && !written.has(r.name))
      problems.push(`column "${r.name}" is NOT NULL without a default, and the copy does not write it`);
  return { problems, wider };
}

export const SHAPE_HINT = 'drop the target table and let cloudshift run create it, or alter it to match the source';
