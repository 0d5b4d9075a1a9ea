/**
 * Sequences are not carried by COPY (nor by logical replication): at the end of the copy, and at
 * cutover, every sequence the migrated tables own or use in a default is set on the target to
 * the source's current value.
 */
import type pg from 'pg';
import { quoteQualified, type QualifiedName } from '../../plan/names.js';

export interface SequenceValue {
  name: QualifiedName;
  lastValue: string;
  isCalled: boolean;
}

export async function readSequences(source: pg.Client, tables: QualifiedName[]): Promise<SequenceValue[]> {
  if (tables.length === 0) return [];
  const { rows } = await source.query<{ schema: string; name: string }>(
    `WITH t AS (SELECT unnest($1::text[])::regclass::oid AS oid)
     SELECT DISTINCT n.nspname AS schema, s.relname AS name
       FROM pg_depend d
       JOIN pg_class s ON s.relkind = 'S'
       JOIN pg_namespace n ON n.oid = s.relnamespace
      WHERE (d.classid = 'pg_class'::regclass AND d.objid = s.oid AND d.refobjid IN (SELECT oid FROM t) AND d.deptype IN ('a', 'i'))
         OR (d.classid = 'pg_attrdef'::regclass AND d.refobjid = s.oid
             AND d.objid IN (SELECT ad.oid FROM pg_attrdef ad WHERE ad.adrelid IN (SELECT oid FROM t)))
      ORDER BY 1, 2`,
    [tables.map(quoteQualified)],
  );
  const out: SequenceValue[] = [];
  for (const r of rows) {
    const name = { schema: r.schema, name: r.name };
    const v = await source.query<{ last_value: string; is_called: boolean }>(
      `SELECT last_value::text AS last_value, is_called FROM ${quoteQualified(name)}`,
    );
    out.push({ name, lastValue: v.rows[0]!.last_value, isCalled: v.rows[0]!.is_called });
  }
  return out;
}

export async function setSequences(target: pg.Client, values: SequenceValue[]): Promise<void> {
  for (const v of values) {
    await target.query(`SELECT setval($1::regclass, $2::bigint, $3)`, [quoteQualified(v.name), v.lastValue, v.isCalled]);
  }
}
