/**
 * Replica identity on the source before its tables are published. A published table without a
 * primary key and with the default identity makes the application's UPDATE and DELETE fail on
 * the source ("cannot update table … because it does not have a replica identity and publishes
 * updates"), so live sync may not start on one unless the plan says how its rows are identified:
 * `replicaIdentity: full` or `index` is set on the source here (and so copied to the target with
 * the schema, for the reverse sync); `insert-only` leaves it as it is.
 */
import type pg from 'pg';
import { PreconditionError } from '../errors.js';
import type { Plan } from '../plan/defaults.js';
import { displayName, quoteIdent, quoteQualified, type QualifiedName } from '../plan/names.js';
import { introspectTable, type TableInfo } from '../source/introspect.js';

/** How long the ALTER TABLE may wait for its lock before giving up (it would queue the application's queries behind it). */
const LOCK_TIMEOUT = '5s';

export interface IdentityChange {
  table: string;
  statement: string;
}

/**
 * Sets the replica identity the plan asks for on each published table that needs one; returns
 * the statements run (none when every table has a key or identity already). Refuses, before
 * anything is changed, a table that needs one and has none in the plan.
 */
export async function ensureReplicaIdentity(source: pg.Client, plan: Plan, tables: readonly QualifiedName[]): Promise<IdentityChange[]> {
  const todo: IdentityChange[] = [];
  for (const name of tables) {
    const info = await introspectTable(source, name);
    if (!info) continue;
    const pk = info.uniqueKeys.find((k) => k.primary);
    const leaves = info.kind === 'partitioned' ? await leafIdentities(source, info.oid) : [];
    const nothing = identityNothing(info, displayName(name), leaves);
    // With a primary key, a partitioned table's own setting does not matter: its rows are changed in its partitions.
    const rootIdentified = (info.kind === 'partitioned' && pk?.usableAsIdentity) || isIdentified(info, info.replicaIdentity);
    if (nothing.length === 0 && rootIdentified && leaves.every((l) => isIdentified(info, l.replident))) continue;
    const table = displayName(name);
    const t = plan.tables.find((x) => displayName(x.name) === table);
    const where = t ? `tables[${t.index}].replicaIdentity` : `a tables entry for ${table} with replicaIdentity`;
    const unique = info.uniqueKeys.find((k) => k.usableAsIdentity);
    if (t?.replicaIdentity === 'insert-only') continue;
    if (t?.replicaIdentity === 'full') {
      for (const rel of [quoteQualified(name), ...leaves.filter((l) => l.replident !== 'f').map((l) => l.quoted)])
        todo.push({ table, statement: `ALTER TABLE ${rel} REPLICA IDENTITY FULL` });
    } else if (t?.replicaIdentity === 'index' && leaves.length > 0)
      throw new PreconditionError(
        `${table} is partitioned: replicaIdentity: index would have to name an index of each partition; use full, or add a primary key (${where}); nothing was changed`,
      );
    else if (t?.replicaIdentity === 'index' && unique)
      todo.push({ table, statement: `ALTER TABLE ${quoteQualified(name)} REPLICA IDENTITY USING INDEX ${quoteIdent(unique.name)}` });
    else if (t?.replicaIdentity === 'index')
      throw new PreconditionError(
        `${table} has no unique index usable as replica identity (every column NOT NULL, not partial) for replicaIdentity: index (${where}); nothing was changed`,
      );
    else if (nothing.length > 0)
      throw new PreconditionError(
        `${table} has a primary key, but REPLICA IDENTITY NOTHING on ${nothing.join(', ')}: with live sync, UPDATE and DELETE on it would fail on the source. Run ALTER TABLE … REPLICA IDENTITY DEFAULT on ${nothing.length === 1 ? 'it' : 'each'}, or set ${where} (full | index | insert-only); nothing was changed`,
      );
    else
      throw new PreconditionError(
        `${table} has no ${pk ? 'primary key usable as replica identity (its primary key is DEFERRABLE)' : 'primary key'} or replica identity: with live sync, UPDATE and DELETE on it would fail on the source. Set ${where} (full | index | insert-only), or add a primary key; nothing was changed`,
      );
  }
  for (const change of todo) await alter(source, change);
  return todo;
}

/**
 * Whether live sync can identify the rows of a relation with this replica identity: FULL, an
 * index, or DEFAULT with a primary key (a DEFERRABLE one is none: PostgreSQL refuses it). A
 * partitioned table's rows are changed in its partitions, each with an identity of its own
 * (ALTER TABLE … REPLICA IDENTITY does not recurse): every one must have it.
 */
function isIdentified(info: TableInfo, replident: string): boolean {
  return replident === 'f' || replident === 'i' || (replident === 'd' && info.uniqueKeys.some((k) => k.primary && k.usableAsIdentity));
}

/**
 * The relations of a table with a usable primary key that still have REPLICA IDENTITY NOTHING
 * (the table, or its leaf partitions), by name: published, their UPDATE and DELETE fail on the source.
 */
export function identityNothing(info: TableInfo, table: string, leaves: ReadonlyArray<{ display: string; replident: string }>): string[] {
  if (!info.uniqueKeys.some((k) => k.primary && k.usableAsIdentity)) return [];
  // A partitioned table's own rows are its partitions' (PostgreSQL checks the partition changed).
  const own = info.replicaIdentity === 'n' && info.kind !== 'partitioned';
  return [...(own ? [table] : []), ...leaves.filter((l) => l.replident === 'n').map((l) => l.display)];
}

/** The leaf partitions of a partitioned table, quoted, with their replica identity. */
export async function leafIdentities(
  source: pg.Client,
  oid: number,
): Promise<Array<{ quoted: string; display: string; replident: string }>> {
  const { rows } = await source.query<{ schema: string; name: string; replident: string }>(
    `SELECT n.nspname AS schema, c.relname AS name, c.relreplident AS replident
       FROM pg_partition_tree($1::regclass) t
       JOIN pg_class c ON c.oid = t.relid
       JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE t.isleaf`,
    [oid],
  );
  return rows.map((r) => ({
    quoted: quoteQualified({ schema: r.schema, name: r.name }),
    display: displayName({ schema: r.schema, name: r.name }),
    replident: r.replident,
  }));
}

async function alter(source: pg.Client, change: IdentityChange): Promise<void> {
  await source.query('BEGIN');
  try {
    await source.query(`SET LOCAL lock_timeout = '${LOCK_TIMEOUT}'`);
    await source.query(change.statement);
    await source.query('COMMIT');
  } catch (err) {
    await source.query('ROLLBACK').catch(() => undefined);
    const code = (err as { code?: string }).code;
    if (code === '55P03')
      throw new PreconditionError(
        `${change.table}: could not lock it within ${LOCK_TIMEOUT} to set its replica identity (a transaction holds it); run again when it is done`,
      );
    if (code === '42501')
      throw new PreconditionError(
        `${change.table}: setting its replica identity needs its owner (${change.statement}): run that as the owner, then run again`,
      );
    throw err;
  }
}
