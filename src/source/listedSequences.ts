/**
 * The sequences a plan lists under `sequences`, looked up on the source by name: the run creates
 * and sets them, the dry run checks them. One that is missing, or is no sequence, is one problem,
 * worded the same for both.
 */
import type pg from 'pg';
import { displayName, type QualifiedName } from '../plan/names.js';

export interface ListedSequence {
  name: QualifiedName;
  /** Null when nothing of that name exists. */
  oid: number | null;
  relkind: string | null;
  /** Null for a sequence never used (or anything that is no sequence). */
  lastValue: string | null;
}

export async function findListedSequences(client: pg.Client, names: QualifiedName[]): Promise<ListedSequence[]> {
  if (names.length === 0) return [];
  const { rows } = await client.query<{ oid: number | null; relkind: string | null; last_value: string | null }>(
    `SELECT c.oid::int AS oid, c.relkind::text AS relkind,
            CASE WHEN c.relkind = 'S' THEN (SELECT s.last_value::text FROM pg_sequences s WHERE s.schemaname = u.schema AND s.sequencename = u.name) END AS last_value
       FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS u(schema, name, i)
       LEFT JOIN pg_namespace n ON n.nspname = u.schema
       LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = u.name
      ORDER BY u.i`,
    [names.map((q) => q.schema), names.map((q) => q.name)],
  );
  return rows.map((r, i) => ({ name: names[i]!, oid: r.oid, relkind: r.relkind, lastValue: r.last_value }));
}

/** What is wrong with the plan's `sequences[index]` on the source, or null. */
export function listedSequenceProblem(s: ListedSequence, index: number): string | null {
  const where = `plan sequences[${index}]`;
  if (s.oid === null) return `sequence ${displayName(s.name)} does not exist on the source (${where})`;
  if (s.relkind !== 'S') return `${displayName(s.name)} is not a sequence on the source (${where}, relkind ${s.relkind})`;
  return null;
}
