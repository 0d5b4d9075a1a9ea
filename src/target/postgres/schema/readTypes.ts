/**
 * Reading user types, functions and extensions from the source catalogs. Invariants:
 * - runs inside withCatalogSession (search_path = ''), so types and definitions print qualified;
 * - rows carry their direct dependencies (types on types and functions, functions on types,
 *   functions and relations) as oids, for the caller to follow and to order creation by;
 * - only what the caller asks for is read; nothing here decides what is replayed.
 */
import type pg from 'pg';
import type { QualifiedName } from '../../../plan/names.js';
import { collationName, procDeps, topoSort, typeDeps } from './catalog.js';
import type { ExtensionDef, TypeDef } from './model.js';

export interface TypeRow {
  oid: number;
  schema: string;
  name: string;
  typtype: string;
  relkind: string;
  relid: number;
  in_extension: boolean;
  types: number[];
  procs: number[];
}

export interface ProcRow {
  oid: number;
  schema: string;
  name: string;
  kind: string;
  args: string;
  definition: string | null;
  procs: number[];
  types: number[];
  relations: number[];
  comment: string | null;
}

export async function readTypeRows(client: pg.Client, oids: number[]): Promise<TypeRow[]> {
  if (oids.length === 0) return [];
  const { rows } = await client.query<TypeRow>(
    `SELECT t.oid::int AS oid, n.nspname AS schema, t.typname AS name, t.typtype::text AS typtype, t.typrelid::int AS relid,
            coalesce((SELECT c.relkind::text FROM pg_class c WHERE c.oid = t.typrelid), '') AS relkind,
            EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = 'pg_type'::regclass AND e.objid = t.oid AND e.deptype = 'e') AS in_extension,
            ARRAY(SELECT x::int FROM (
                    SELECT t.typelem AS x WHERE t.typelem <> 0 AND t.typlen = -1
                    UNION SELECT t.typbasetype WHERE t.typtype = 'd'
                    UNION SELECT a.atttypid FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
                           WHERE a.attrelid = t.typrelid AND c.relkind = 'c' AND a.attnum > 0 AND NOT a.attisdropped
                    UNION SELECT r.rngsubtype FROM pg_range r WHERE r.rngtypid = t.oid
                    UNION SELECT r.rngtypid FROM pg_range r WHERE r.rngmultitypid = t.oid) s) AS types,
            ARRAY(SELECT DISTINCT p FROM unnest(${procDeps('pg_type', 't.oid')} || ARRAY(
                    SELECT unnest(${procDeps('pg_constraint', 'c.oid')}) FROM pg_constraint c WHERE c.contypid = t.oid)) p) AS procs
       FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
      WHERE t.oid = ANY($1::oid[])`,
    [oids],
  );
  return rows;
}

export async function readProcRows(client: pg.Client, oids: number[]): Promise<ProcRow[]> {
  if (oids.length === 0) return [];
  const { rows } = await client.query<ProcRow>(
    `SELECT p.oid::int AS oid, n.nspname AS schema, p.proname AS name, p.prokind::text AS kind,
            pg_get_function_identity_arguments(p.oid) AS args,
            CASE WHEN p.prokind <> 'a' THEN pg_get_functiondef(p.oid) END AS definition,
            ${procDeps('pg_proc', 'p.oid')} AS procs, ${typeDeps('pg_proc', 'p.oid')} AS types,
            ARRAY(SELECT DISTINCT d.refobjid::int FROM pg_depend d
                   WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.refclassid = 'pg_class'::regclass) AS relations,
            obj_description(p.oid, 'pg_proc') AS comment
       FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
      WHERE p.oid = ANY($1::oid[])
      ORDER BY n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)`,
    [oids],
  );
  return rows;
}

export async function readTypeDetails(client: pg.Client, types: TypeRow[]): Promise<Array<{ oid: number; def: TypeDef }>> {
  if (types.length === 0) return [];
  const oids = types.map((r) => r.oid);
  const { rows } = await client.query<{
    oid: number;
    labels: string[] | null;
    base_type: string | null;
    collation: string | null;
    default_expr: string | null;
    not_null: boolean;
    comment: string | null;
  }>(
    `SELECT t.oid::int AS oid,
            CASE WHEN t.typtype = 'e' THEN ARRAY(SELECT e.enumlabel::text FROM pg_enum e WHERE e.enumtypid = t.oid ORDER BY e.enumsortorder) END AS labels,
            CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod) END AS base_type,
            CASE WHEN t.typtype = 'd' AND t.typcollation <> 0
                  AND t.typcollation <> (SELECT b.typcollation FROM pg_type b WHERE b.oid = t.typbasetype)
                 THEN ${collationName('t.typcollation')} END AS collation,
            pg_get_expr(t.typdefaultbin, 0) AS default_expr, t.typnotnull AS not_null,
            obj_description(t.oid, 'pg_type') AS comment
       FROM pg_type t WHERE t.oid = ANY($1::oid[])`,
    [oids],
  );
  const constraints = await client.query<{ domain: number; name: string; definition: string; validated: boolean; comment: string | null }>(
    `SELECT c.contypid::int AS domain, c.conname AS name, pg_get_constraintdef(c.oid) AS definition, c.convalidated AS validated,
            obj_description(c.oid, 'pg_constraint') AS comment
       FROM pg_constraint c WHERE c.contypid = ANY($1::oid[]) AND c.contype = 'c' ORDER BY c.conname`,
    [oids],
  );
  const attributes = await client.query<{ type: number; name: string; type_name: string; collation: string | null }>(
    `SELECT t.oid::int AS type, a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type_name,
            CASE WHEN a.attcollation <> 0 AND a.attcollation <> at.typcollation THEN ${collationName('a.attcollation')} END AS collation
       FROM pg_type t JOIN pg_attribute a ON a.attrelid = t.typrelid JOIN pg_type at ON at.oid = a.atttypid
      WHERE t.oid = ANY($1::oid[]) AND a.attnum > 0 AND NOT a.attisdropped
      ORDER BY t.oid, a.attnum`,
    [oids],
  );
  const ranges = await client.query<{
    type: number;
    subtype: string;
    opclass: string;
    collation: string | null;
    canonical: string | null;
    subdiff: string | null;
    multirange_schema: string | null;
    multirange_name: string | null;
  }>(
    `SELECT r.rngtypid::int AS type, format_type(r.rngsubtype, NULL) AS subtype,
            quote_ident(opn.nspname) || '.' || quote_ident(opc.opcname) AS opclass,
            CASE WHEN r.rngcollation <> 0 AND r.rngcollation <> st.typcollation THEN ${collationName('r.rngcollation')} END AS collation,
            CASE WHEN r.rngcanonical <> 0 THEN r.rngcanonical::regproc::text END AS canonical,
            CASE WHEN r.rngsubdiff <> 0 THEN r.rngsubdiff::regproc::text END AS subdiff,
            mn.nspname AS multirange_schema, mt.typname AS multirange_name
       FROM pg_range r
       JOIN pg_type st ON st.oid = r.rngsubtype
       JOIN pg_opclass opc ON opc.oid = r.rngsubopc JOIN pg_namespace opn ON opn.oid = opc.opcnamespace
       LEFT JOIN pg_type mt ON mt.oid = (to_jsonb(r) ->> 'rngmultitypid')::oid
       LEFT JOIN pg_namespace mn ON mn.oid = mt.typnamespace
      WHERE r.rngtypid = ANY($1::oid[])`,
    [oids],
  );
  return types.map((ty) => {
    const d = rows.find((r) => r.oid === ty.oid)!;
    const name: QualifiedName = { schema: ty.schema, name: ty.name };
    let def: TypeDef;
    if (ty.typtype === 'e') def = { kind: 'enum', name, labels: d.labels ?? [], comment: d.comment };
    else if (ty.typtype === 'd')
      def = {
        kind: 'domain',
        name,
        baseType: d.base_type!,
        collation: d.collation,
        default: d.default_expr,
        notNull: d.not_null,
        constraints: constraints.rows
          .filter((c) => c.domain === ty.oid)
          .map((c) => ({ name: c.name, definition: c.definition, validated: c.validated, comment: c.comment })),
        comment: d.comment,
      };
    else if (ty.typtype === 'c')
      def = {
        kind: 'composite',
        name,
        attributes: attributes.rows
          .filter((a) => a.type === ty.oid)
          .map((a) => ({ name: a.name, type: a.type_name, collation: a.collation })),
        comment: d.comment,
      };
    else {
      const r = ranges.rows.find((x) => x.type === ty.oid)!;
      def = {
        kind: 'range',
        name,
        subtype: r.subtype,
        opclass: r.opclass,
        collation: r.collation,
        canonical: r.canonical,
        subtypeDiff: r.subdiff,
        multirange: r.multirange_schema && r.multirange_name ? { schema: r.multirange_schema, name: r.multirange_name } : null,
        comment: d.comment,
      };
    }
    return { oid: ty.oid, def };
  });
}

/** Every extension but plpgsql, those another requires first. */
export async function readExtensions(client: pg.Client): Promise<ExtensionDef[]> {
  const { rows } = await client.query<{ oid: number; name: string; schema: string; version: string; requires: number[] }>(
    `SELECT e.oid::int AS oid, e.extname AS name, n.nspname AS schema, e.extversion AS version,
            ARRAY(SELECT d.refobjid::int FROM pg_depend d
                   WHERE d.classid = 'pg_extension'::regclass AND d.objid = e.oid AND d.refclassid = 'pg_extension'::regclass) AS requires
       FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
      WHERE e.extname <> 'plpgsql'
      ORDER BY e.extname`,
  );
  return topoSort(
    rows,
    (r) => r.oid,
    (r) => r.requires,
  ).map((r) => ({ name: r.name, schema: r.schema, version: r.version }));
}
