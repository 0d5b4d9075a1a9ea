/**
 * Sequences are not carried by COPY (nor by logical replication): at the end of the copy, and at
 * cutover, every sequence the migrated tables own or use in a default, and every one the plan
 * lists, is set on the other side to this side's current value.
 */
import type pg from 'pg';
import { quoteQualified, type QualifiedName } from '../../plan/names.js';

export interface SequenceValue {
  name: QualifiedName;
  lastValue: string;
  isCalled: boolean;
}

export async function readSequences(source: pg.Client, tables: QualifiedName[], listed: QualifiedName[] = []): Promise<SequenceValue[]> {
  if (tables.length === 0 && listed.length === 0) return [];
  const { rows } = await source.query<{ schema: string; name: string }>(
    `WITH t AS (SELECT unnest($1::text[])::regclass::oid AS oid)
     SELECT DISTINCT n.nspname AS schema, s.relname AS name
       FROM pg_depend d
       JOIN pg_class s ON s.relkind = 'S'
       JOIN pg_namespace n ON n.oid = s.relnamespace
      WHERE (d.classid = 'pg_class'::regclass AND d.objid = s.oid AND d.refobjid IN (SELECT oid FROM t) AND d.deptype IN ('a', 'i'))
         OR (d.classid = 'pg_attrdef'::regclass AND d.refobjid = s.oid
             AND d.objid IN (SELECT ad.oid FROM pg_attrdef ad WHERE ad.adrelid IN (SELECT oid FROM t)))
     UNION
     SELECT n.nspname, s.relname
       FROM unnest($2::text[]) AS l(name)
       JOIN pg_class s ON s.oid = l.name::regclass AND s.relkind = 'S'
       JOIN pg_namespace n ON n.oid = s.relnamespace
      ORDER BY 1, 2`,
    [tables.map(quoteQualified), listed.map(quoteQualified)],
  );
  if (rows.length === 0) return [];
  // One round trip for all of them: at cutover this runs inside the write pause, and the target
  // may be a WAN away.
  const names = rows.map((r) => ({ schema: r.schema, name: r.name }));
  const { rows: values } = await source.query<{ i: number; last_value: string; is_called: boolean }>(
    names.map((n, i) => `SELECT ${i} AS i, last_value::text AS last_value, is_called FROM ${quoteQualified(n)}`).join(' UNION ALL '),
  );
  return values.sort((a, b) => a.i - b.i).map((v) => ({ name: names[v.i]!, lastValue: v.last_value, isCalled: v.is_called }));
}

export async function setSequences(target: pg.Client, values: SequenceValue[]): Promise<void> {
  if (values.length === 0) return;
  await target.query(`SELECT setval(s::regclass, v, c) FROM unnest($1::text[], $2::bigint[], $3::boolean[]) AS u(s, v, c)`, [
    values.map((v) => quoteQualified(v.name)),
    values.map((v) => v.lastValue),
    values.map((v) => v.isCalled),
  ]);
}
