/**
 * The sequences a plan lists under `sequences`, looked up by name: the run creates and sets them,
 * the dry run checks them, cutover finds them on the target first. One that is missing, is no
 * sequence, or cannot be read is one problem, worded the same for the run and the dry run.
 */
import type pg from 'pg';
import { PreconditionError } from '../errors.js';
import { displayName, type QualifiedName } from '../plan/names.js';

export interface ListedSequence {
  name: QualifiedName;
  /** Null when nothing of that name exists. */
  oid: number | null;
  relkind: string | null;
  /** Null for a sequence never used (or anything that is no sequence, or one the user may not read). */
  lastValue: string | null;
  /** The connected user may read its value (the copy and cutover do), and set it (rollback does). */
  canRead: boolean;
  canSet: boolean;
}

export async function findListedSequences(client: pg.Client, names: QualifiedName[]): Promise<ListedSequence[]> {
  if (names.length === 0) return [];
  const { rows } = await client.query<{
    oid: number | null;
    relkind: string | null;
    last_value: string | null;
    can_read: boolean | null;
    can_set: boolean | null;
  }>(
    `SELECT c.oid::int AS oid, c.relkind::text AS relkind,
            CASE WHEN c.relkind = 'S' THEN (SELECT s.last_value::text FROM pg_sequences s WHERE s.schemaname = u.schema AND s.sequencename = u.name) END AS last_value,
            CASE WHEN c.relkind = 'S' THEN has_sequence_privilege(c.oid, 'SELECT') END AS can_read,
            CASE WHEN c.relkind = 'S' THEN has_sequence_privilege(c.oid, 'UPDATE') END AS can_set
       FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS u(schema, name, i)
       LEFT JOIN pg_namespace n ON n.nspname = u.schema
       LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = u.name
      ORDER BY u.i`,
    [names.map((q) => q.schema), names.map((q) => q.name)],
  );
  return rows.map((r, i) => ({
    name: names[i]!,
    oid: r.oid,
    relkind: r.relkind,
    lastValue: r.last_value,
    canRead: r.can_read === true,
    canSet: r.can_set === true,
  }));
}

/** What is wrong with the plan's `sequences[index]` on the source, or null. */
export function listedSequenceProblem(s: ListedSequence, index: number): string | null {
  const where = `plan sequences[${index}]`;
  if (s.oid === null) return `sequence ${displayName(s.name)} does not exist on the source (${where})`;
  if (s.relkind !== 'S') return `${displayName(s.name)} is not a sequence on the source (${where}, relkind ${s.relkind})`;
  if (!s.canRead)
    return `permission denied: the source user may not read sequence ${displayName(s.name)} (${where}); GRANT SELECT ON SEQUENCE ${displayName(s.name)} TO <user>`;
  return null;
}

/** The plan's sequences by oid, in its order; the first problem (listedSequenceProblem) is thrown, exit 3. */
export async function requireListedSequences(client: pg.Client, names: QualifiedName[]): Promise<number[]> {
  return (await findListedSequences(client, names)).map((s, i) => {
    const problem = listedSequenceProblem(s, i);
    if (problem !== null) throw new PreconditionError(problem);
    return s.oid!;
  });
}

/** Those of `names` that do not exist as sequences on this side. */
export async function sequencesMissing(client: pg.Client, names: QualifiedName[]): Promise<QualifiedName[]> {
  return (await findListedSequences(client, names)).filter((s) => s.relkind !== 'S').map((s) => s.name);
}
