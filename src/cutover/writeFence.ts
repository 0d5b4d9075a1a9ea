/**
 * Write fences: the side the application left is made read-only for it, so a write that
 * bypasses PgBouncer (a batch job with the old address, a psql session) fails loudly instead of
 * landing where nobody reads it. A fence is a statement-level trigger on each migrated table (and
 * each of its partitions, which a statement can name directly) that raises SQLSTATE 25006
 * (read_only_sql_transaction) for INSERT, UPDATE, DELETE and TRUNCATE.
 * Triggers do not fire under `session_replication_role = replica`, which is how cloudshift's own
 * appliers write: the reverse (or forward) stream still applies. Created inside the PgBouncer
 * pause, before the fence position, so every write they let through is in the drained stream.
 *
 * Inside a pause no statement may wait for a table lock: dropping a trigger takes an ACCESS
 * EXCLUSIVE lock, which waits for every reader of the table (a nightly pg_dump) while the
 * application waits on PgBouncer. So a fence is lifted by making its function do nothing (no
 * table lock at all; every session runs the new body from its next statement), its triggers
 * stay, and fencing again only creates the triggers a table lacks. Every fence takes SHARE ROW
 * EXCLUSIVE on each table (CREATE TRIGGER does; a table that kept its trigger is locked so):
 * readers do not block it, and it waits for every transaction that has written to the table, so
 * none commits after the fence position (a write made while the body did nothing would).
 *
 * Each plan has its own function and triggers (named after the plan): a fence or lift of one plan
 * never touches another's tables in the same database.
 */
import type pg from 'pg';
import { quoteIdent, quoteQualified, type QualifiedName } from '../plan/names.js';
import type { ObjectLedger, ReplicationObject, Side } from '../sync/objects.js';

/** The name of a plan's fence function and of its triggers. */
export function fenceName(planName: string): string {
  // The plan's name as it is (a quoted identifier may hold '-'), so no two plans share one.
  return `cloudshift_write_fence_${planName}`.slice(0, 63);
}

/** The one function and trigger name of cloudshift before fences were per plan. */
const LEGACY_FENCE = 'cloudshift_write_fence';

export function fenceObject(side: Side, planName: string): ReplicationObject {
  return { side, kind: 'write-fence', name: fenceName(planName), direction: side === 'source' ? 'forward' : 'reverse' };
}

function fenceFunction(schema: string, planName: string): string {
  return `${quoteIdent(schema)}.${quoteIdent(fenceName(planName))}`;
}

export async function createWriteFence(
  client: pg.Client,
  ledger: ObjectLedger,
  side: Side,
  schema: string,
  planName: string,
  tables: readonly QualifiedName[],
  otherSide: string,
): Promise<void> {
  const name = fenceName(planName);
  await ledger.record(fenceObject(side, planName), 'creating');
  const where = otherSide.replace(/[^A-Za-z0-9 _.:/()-]/g, '');
  // Each table and each of its partitions (a statement trigger fires only on the table a
  // statement names: INSERT INTO a partition passes its parent's), with its oid and whether it
  // kept its trigger from an earlier fence.
  const { rows } = await client.query<{ oid: string; rel: string; fenced: boolean }>(
    `SELECT r.oid::text AS oid, format('%I.%I', n.nspname, r.relname) AS rel,
            EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = r.oid AND t.tgname = $1) AS fenced
       FROM (SELECT DISTINCT ON (p.relid) p.relid, x.i
               FROM unnest($2::regclass[]) WITH ORDINALITY AS x(rel, i)
               CROSS JOIN LATERAL (SELECT x.rel AS relid UNION SELECT relid FROM pg_partition_tree(x.rel)) p
              ORDER BY p.relid, x.i) AS part
       JOIN pg_class r ON r.oid = part.relid
       JOIN pg_namespace n ON n.oid = r.relnamespace
      ORDER BY part.i, r.oid`,
    [name, tables.map(quoteQualified)],
  );
  // One statement batch, one transaction: the fence is on every table or on none.
  const statements = [
    `CREATE SCHEMA IF NOT EXISTS ${quoteIdent(schema)}`,
    ...rows.filter((r) => r.fenced).map((r) => `LOCK TABLE ${r.rel} IN SHARE ROW EXCLUSIVE MODE`),
    // Only these tables refuse: one this plan fenced before and no longer lists keeps a trigger that passes.
    fenceBody(
      schema,
      planName,
      `IF TG_RELID = ANY('{${rows.map((r) => r.oid).join(',')}}'::oid[]) THEN
         RAISE EXCEPTION 'cloudshift: % is read-only: the application now writes to ${where}', TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME
           USING ERRCODE = 'read_only_sql_transaction',
                 HINT = 'connect through the switch (PgBouncer), which routes to the side that is live';
       END IF;
       RETURN NULL;`,
    ),
    ...rows
      .filter((r) => !r.fenced)
      .map(
        (r) => `CREATE TRIGGER ${quoteIdent(name)} BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON ${r.rel}
         FOR EACH STATEMENT EXECUTE FUNCTION ${fenceFunction(schema, planName)}()`,
      ),
  ];
  // One transaction: a multi-statement simple query is one unless it says otherwise.
  await client.query(statements.join(';\n'));
  await ledger.record(fenceObject(side, planName), 'created');
}

/** Lifts the fence: its function does nothing from now on (no table lock); its triggers stay. */
export async function liftWriteFence(client: pg.Client, ledger: ObjectLedger, side: Side, schema: string, planName: string): Promise<void> {
  const { rows } = await client.query<{ present: boolean }>(`SELECT to_regprocedure($1) IS NOT NULL AS present`, [
    `${fenceFunction(schema, planName)}()`,
  ]);
  if (rows[0]!.present) await client.query(fenceBody(schema, planName, 'RETURN NULL;'));
  // A fence an earlier cloudshift put up (one function for every plan) is lifted too.
  const legacy = `${quoteIdent(schema)}.${quoteIdent(LEGACY_FENCE)}`;
  const { rows: old } = await client.query<{ present: boolean }>(`SELECT to_regprocedure($1) IS NOT NULL AS present`, [`${legacy}()`]);
  if (old[0]!.present)
    await client.query(`CREATE OR REPLACE FUNCTION ${legacy}() RETURNS trigger LANGUAGE plpgsql AS $fence$ BEGIN RETURN NULL; END $fence$`);
  await ledger.record(fenceObject(side, planName), 'dropped');
}

function fenceBody(schema: string, planName: string, body: string): string {
  return `CREATE OR REPLACE FUNCTION ${fenceFunction(schema, planName)}() RETURNS trigger LANGUAGE plpgsql AS $fence$
     BEGIN
       ${body}
     END
     $fence$`;
}
