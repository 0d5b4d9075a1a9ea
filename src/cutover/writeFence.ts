/**
 * Write fences: the side the application left is made read-only for it, so a write that
 * bypasses PgBouncer (a batch job with the old address, a psql session) fails loudly instead of
 * landing where nobody reads it. A fence is a statement-level trigger on each migrated table that
 * raises SQLSTATE 25006 (read_only_sql_transaction) for INSERT, UPDATE, DELETE and TRUNCATE.
 * Triggers do not fire under `session_replication_role = replica`, which is how cloudshift's own
 * appliers write: the reverse (or forward) stream still applies. Created inside the PgBouncer
 * pause, before the fence position, so every write they let through is in the drained stream.
 *
 * Inside a pause no statement may wait for a table lock: dropping a trigger takes an ACCESS
 * EXCLUSIVE lock, which waits for every reader of the table (a nightly pg_dump) while the
 * application waits on PgBouncer. So a fence is lifted by making its function do nothing (no
 * table lock at all; every session runs the new body from its next statement), its triggers
 * stay, and fencing again only creates the triggers a table lacks (SHARE ROW EXCLUSIVE, which
 * readers do not block).
 */
import type pg from 'pg';
import { quoteIdent, quoteQualified, type QualifiedName } from '../plan/names.js';
import type { ObjectLedger, ReplicationObject, Side } from '../sync/objects.js';

export const FENCE_TRIGGER = 'cloudshift_write_fence';

export function fenceObject(side: Side): ReplicationObject {
  return { side, kind: 'write-fence', name: FENCE_TRIGGER, direction: side === 'source' ? 'forward' : 'reverse' };
}

function fenceFunction(schema: string): string {
  return `${quoteIdent(schema)}.${quoteIdent(FENCE_TRIGGER)}`;
}

export async function createWriteFence(
  client: pg.Client,
  ledger: ObjectLedger,
  side: Side,
  schema: string,
  tables: readonly QualifiedName[],
  otherSide: string,
): Promise<void> {
  await ledger.record(fenceObject(side), 'creating');
  const where = otherSide.replace(/[^A-Za-z0-9 _.:/()-]/g, '');
  // Each table's oid, and whether it kept its trigger from an earlier fence.
  const { rows } = await client.query<{ oid: string; fenced: boolean }>(
    `SELECT x.rel::oid::text AS oid, EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = x.rel AND t.tgname = $1) AS fenced
       FROM unnest($2::regclass[]) WITH ORDINALITY AS x(rel, i) ORDER BY x.i`,
    [FENCE_TRIGGER, tables.map(quoteQualified)],
  );
  // One statement batch, one transaction: the fence is on every table or on none.
  const statements = [
    `CREATE SCHEMA IF NOT EXISTS ${quoteIdent(schema)}`,
    // Only this plan's tables refuse: a table an earlier plan fenced keeps a trigger that passes.
    fenceBody(
      schema,
      `IF TG_RELID = ANY('{${rows.map((r) => r.oid).join(',')}}'::oid[]) THEN
         RAISE EXCEPTION 'cloudshift: % is read-only: the application now writes to ${where}', TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME
           USING ERRCODE = 'read_only_sql_transaction',
                 HINT = 'connect through the switch (PgBouncer), which routes to the side that is live';
       END IF;
       RETURN NULL;`,
    ),
    ...tables
      .filter((_, i) => !rows[i]!.fenced)
      .map(
        (t) => `CREATE TRIGGER ${quoteIdent(FENCE_TRIGGER)} BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON ${quoteQualified(t)}
         FOR EACH STATEMENT EXECUTE FUNCTION ${fenceFunction(schema)}()`,
      ),
  ];
  await client.query(statements.join(';\n'));
  await ledger.record(fenceObject(side), 'created');
}

/** Lifts the fence: its function does nothing from now on (no table lock); its triggers stay. */
export async function liftWriteFence(client: pg.Client, ledger: ObjectLedger, side: Side, schema: string): Promise<void> {
  const { rows } = await client.query<{ present: boolean }>(`SELECT to_regprocedure($1) IS NOT NULL AS present`, [
    `${fenceFunction(schema)}()`,
  ]);
  if (rows[0]!.present) await client.query(fenceBody(schema, 'RETURN NULL;'));
  await ledger.record(fenceObject(side), 'dropped');
}

function fenceBody(schema: string, body: string): string {
  return `CREATE OR REPLACE FUNCTION ${fenceFunction(schema)}() RETURNS trigger LANGUAGE plpgsql AS $fence$
     BEGIN
       ${body}
     END
     $fence$`;
}
