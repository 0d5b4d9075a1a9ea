/** Foreign keys set aside for the copy (migration 20261124000006). */
import type pg from 'pg';
import { quoteIdent, type QualifiedName } from '../../plan/names.js';

export interface SetAsideConstraint {
  table: QualifiedName;
  name: string;
  /** pg_get_constraintdef(), names qualified. */
  definition: string;
  validated: boolean;
}

/** Records them (again: a resumed schema phase finds them recorded and keeps the first record). */
export async function recordSetAside(db: pg.Pool, schema: string, runId: string, list: SetAsideConstraint[]): Promise<void> {
  if (list.length === 0) return;
  await db.query(
    `INSERT INTO ${quoteIdent(schema)}.set_aside_constraints (run_id, table_schema, table_name, name, definition, validated)
     SELECT $1, c.s, c.t, c.n, c.d, c.v FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::boolean[]) AS c(s, t, n, d, v)
     ON CONFLICT DO NOTHING`,
    [
      runId,
      list.map((c) => c.table.schema),
      list.map((c) => c.table.name),
      list.map((c) => c.name),
      list.map((c) => c.definition),
      list.map((c) => c.validated),
    ],
  );
}

export async function listSetAside(db: pg.Pool, schema: string, runId: string): Promise<SetAsideConstraint[]> {
  const { rows } = await db.query<{ table_schema: string; table_name: string; name: string; definition: string; validated: boolean }>(
    `SELECT table_schema, table_name, name, definition, validated FROM ${quoteIdent(schema)}.set_aside_constraints
      WHERE run_id = $1 ORDER BY table_schema, table_name, name`,
    [runId],
  );
  return rows.map((r) => ({
    table: { schema: r.table_schema, name: r.table_name },
    name: r.name,
    definition: r.definition,
    validated: r.validated,
  }));
}

export async function forgetSetAside(db: pg.Pool, schema: string, runId: string, c: SetAsideConstraint): Promise<void> {
  await db.query(
    `DELETE FROM ${quoteIdent(schema)}.set_aside_constraints WHERE run_id = $1 AND table_schema = $2 AND table_name = $3 AND name = $4`,
    [runId, c.table.schema, c.table.name, c.name],
  );
}
