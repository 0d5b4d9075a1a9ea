/**
 * Write fences: the side the application left is made read-only for it, so a write that
 * bypasses PgBouncer (a batch job with the old address, a psql session) fails loudly instead of
 * landing where nobody reads it. A fence is a statement-level trigger on each migrated table that
 * raises SQLSTATE 25006 (read_only_sql_transaction) for INSERT, UPDATE, DELETE and TRUNCATE.
 * Triggers do not fire under `session_replication_role = replica`, which is how cloudshift's own
 * appliers write: the reverse (or forward) stream still applies. Created inside the PgBouncer
 * pause, before the fence position, so every write they let through is in the drained stream.
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
  // One round trip, one transaction: the fence is on every table or on none.
  const statements = [
    `CREATE SCHEMA IF NOT EXISTS ${quoteIdent(schema)}`,
    `CREATE OR REPLACE FUNCTION ${fenceFunction(schema)}() RETURNS trigger LANGUAGE plpgsql AS $fence$
     BEGIN
       RAISE EXCEPTION 'cloudshift: % is read-only: the application now writes to ${where}', TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME
         USING ERRCODE = 'read_only_sql_transaction',
               HINT = 'connect through the switch (PgBouncer), which routes to the side that is live';
     END
     $fence$`,
    ...tables.flatMap((t) => [
      `DROP TRIGGER IF EXISTS ${quoteIdent(FENCE_TRIGGER)} ON ${quoteQualified(t)}`,
      `CREATE TRIGGER ${quoteIdent(FENCE_TRIGGER)} BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON ${quoteQualified(t)}
         FOR EACH STATEMENT EXECUTE FUNCTION ${fenceFunction(schema)}()`,
    ]),
  ];
  await client.query(statements.join(';\n'));
  await ledger.record(fenceObject(side), 'created');
}

export async function dropWriteFence(client: pg.Client, ledger: ObjectLedger, side: Side, schema: string): Promise<void> {
  // CASCADE drops the triggers with the function, on whichever tables still have one.
  await client.query(`DROP FUNCTION IF EXISTS ${fenceFunction(schema)}() CASCADE`);
  await ledger.record(fenceObject(side), 'dropped');
}
