/**
 * Foreign keys the target already has on the plan's tables: a schema created before the run, or
 * one left by an earlier run (`existingData: truncate`). Batches are copied in parallel, so a
 * child table's batch can commit before the parent rows it names; these constraints are set
 * aside for the copy (recorded in the state store first, then dropped, so a crash in between
 * loses none) and put back after the data, as they were (validated, or NOT VALID). The post-data
 * phase runs first and creates the source's constraints; one of the same name is then already
 * there and is left as it is.
 */
import type pg from 'pg';
import { displayName, quoteIdent, quoteQualified, type QualifiedName } from '../../plan/names.js';
import { forgetSetAside, listSetAside, recordSetAside, type SetAsideConstraint } from '../../state/sql/setAside.js';
import { withCatalogSession } from './schema/catalog.js';
import { runStep } from './schema/execute.js';

export interface StateRef {
  pool: pg.Pool;
  schema: string;
  runId: string;
}

/** Foreign keys declared on these tables (not the copies PostgreSQL makes on partitions). */
export async function foreignKeysOn(target: pg.Client, tables: QualifiedName[]): Promise<SetAsideConstraint[]> {
  const { rows } = await withCatalogSession(target, () =>
    target.query<{ schema: string; table: string; name: string; definition: string; validated: boolean }>(
      `SELECT n.nspname AS schema, t.relname AS table, c.conname AS name, pg_get_constraintdef(c.oid) AS definition, c.convalidated AS validated
         FROM pg_catalog.pg_constraint c
         JOIN pg_catalog.pg_class t ON t.oid = c.conrelid
         JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace
        WHERE c.contype = 'f' AND c.conparentid = 0
          AND (n.nspname, t.relname) IN (SELECT * FROM unnest($1::text[], $2::text[]))
        ORDER BY 1, 2, 3`,
      [tables.map((t) => t.schema), tables.map((t) => t.name)],
    ),
  );
  return rows.map((r) => ({ table: { schema: r.schema, name: r.table }, name: r.name, definition: r.definition, validated: r.validated }));
}

/** Records and drops them; returns what is set aside for this run (also by an earlier attempt). */
export async function setAsideForeignKeys(target: pg.Client, state: StateRef, tables: QualifiedName[]): Promise<SetAsideConstraint[]> {
  const found = await foreignKeysOn(target, tables);
  await recordSetAside(state.pool, state.schema, state.runId, found);
  for (const c of found) await target.query(`ALTER TABLE ${quoteQualified(c.table)} DROP CONSTRAINT IF EXISTS ${quoteIdent(c.name)}`);
  return listSetAside(state.pool, state.schema, state.runId);
}

/** Puts back what was set aside and is not there (validating it, when it was valid); returns how many. */
export async function restoreForeignKeys(target: pg.Client, state: StateRef): Promise<number> {
  let restored = 0;
  for (const c of await listSetAside(state.pool, state.schema, state.runId)) {
    const added = await runStep(target, {
      label: `foreign key ${c.name} on ${displayName(c.table)} (set aside for the copy)`,
      probe: { kind: 'constraint', args: [c.table.schema, c.table.name, c.name] },
      sql: [
        `ALTER TABLE ${quoteQualified(c.table)} ADD CONSTRAINT ${quoteIdent(c.name)} ${c.definition}${c.validated ? '' : ' NOT VALID'}`,
      ],
    });
    if (added) restored += 1;
    await forgetSetAside(state.pool, state.schema, state.runId, c);
  }
  return restored;
}
