/**
 * Reading the source catalogs: the session every query runs in, and small shared helpers.
 * Invariants:
 * - every query runs with search_path = '' (so pg_get_* print qualified names), ISO dates, UTC,
 *   postgres interval style and standard strings, in one read-only snapshot;
 * - those settings are transaction-local: the caller's session is left as it was, whether it was
 *   idle (we open and commit our own REPEATABLE READ transaction) or inside a transaction (we
 *   work in a savepoint and roll back to it).
 */
import type pg from 'pg';
import type { QualifiedName } from '../../../plan/names.js';

export const SYSTEM_SCHEMAS = ['pg_catalog', 'information_schema', 'pg_toast'];

/** A set_config() list pinning what pg_get_* output depends on, transaction-local. */
export const DEPARSE_SETTINGS = `SELECT set_config('search_path', '', true), set_config('DateStyle', 'ISO, YMD', true),
  set_config('IntervalStyle', 'postgres', true), set_config('TimeZone', 'UTC', true),
  set_config('extra_float_digits', '3', true), set_config('standard_conforming_strings', 'on', true),
  set_config('quote_all_identifiers', 'off', true)`;

export async function withCatalogSession<T>(client: pg.Client, fn: () => Promise<T>): Promise<T> {
  let nested = true;
  try {
    await client.query('SAVEPOINT cloudshift_schema_read');
  } catch (err) {
    // 25P01 no_active_sql_transaction: the session is idle; use a transaction of our own.
    if ((err as { code?: string }).code !== '25P01') throw err;
    nested = false;
  }
  if (!nested) await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
  try {
    await client.query(DEPARSE_SETTINGS);
    const result = await fn();
    if (nested) await client.query('ROLLBACK TO SAVEPOINT cloudshift_schema_read; RELEASE SAVEPOINT cloudshift_schema_read');
    else await client.query('COMMIT');
    return result;
  } catch (err) {
    if (nested)
      await client.query('ROLLBACK TO SAVEPOINT cloudshift_schema_read; RELEASE SAVEPOINT cloudshift_schema_read').catch(() => undefined);
    else await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
}

/** `ARRAY(attnums of rel that the object depends on)`: the columns an expression references. */
export function columnDeps(classid: string, objid: string, rel: string): string {
  return `ARRAY(SELECT dx.refobjsubid::int FROM pg_depend dx
     WHERE dx.classid = '${classid}'::regclass AND dx.objid = ${objid}
       AND dx.refclassid = 'pg_class'::regclass AND dx.refobjid = ${rel} AND dx.refobjsubid > 0)`;
}

/** User functions (not pg_catalog, not an extension's) that the object depends on. */
export function procDeps(classid: string, objid: string): string {
  return `ARRAY(SELECT DISTINCT dx.refobjid::int FROM pg_depend dx JOIN pg_proc px ON px.oid = dx.refobjid
     WHERE dx.classid = '${classid}'::regclass AND dx.objid = ${objid} AND dx.refclassid = 'pg_proc'::regclass
       AND px.pronamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
       AND NOT EXISTS (SELECT 1 FROM pg_depend ex WHERE ex.classid = 'pg_proc'::regclass AND ex.objid = px.oid AND ex.deptype IN ('e', 'i')))`;
}

/** Types (user or not) that the object depends on. */
export function typeDeps(classid: string, objid: string): string {
  return `ARRAY(SELECT DISTINCT dx.refobjid::int FROM pg_depend dx
     WHERE dx.classid = '${classid}'::regclass AND dx.objid = ${objid} AND dx.refclassid = 'pg_type'::regclass)`;
}

/** `quote_ident(schema).quote_ident(name)` of a collation oid, null for 0. */
export function collationName(oidExpr: string): string {
  return `(SELECT quote_ident(cn.nspname) || '.' || quote_ident(co.collname)
     FROM pg_collation co JOIN pg_namespace cn ON cn.oid = co.collnamespace WHERE co.oid = ${oidExpr})`;
}

export function key(q: QualifiedName): string {
  return JSON.stringify([q.schema, q.name]);
}

/** Kahn's algorithm, stable: among ready nodes the earliest in `nodes` goes first; cycles keep input order. */
export function topoSort<T>(nodes: T[], id: (n: T) => number, deps: (n: T) => number[]): T[] {
  const ids = new Set(nodes.map(id));
  const done = new Set<number>();
  const out: T[] = [];
  let pending = [...nodes];
  while (pending.length > 0) {
    const ready = pending.filter((n) => deps(n).every((d) => d === id(n) || !ids.has(d) || done.has(d)));
    const take = ready.length > 0 ? ready : [pending[0]!];
    for (const n of take) {
      out.push(n);
      done.add(id(n));
    }
    const taken = new Set(take);
    pending = pending.filter((n) => !taken.has(n));
  }
  return out;
}
