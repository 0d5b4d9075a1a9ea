/**
 * Deciding what surrounds the migrated tables: the user types and functions they need, views on
 * them, triggers, row-level security policies and extensions. Invariants:
 * - runs inside withCatalogSession (search_path = ''), so every printed name is qualified;
 * - types and functions are followed transitively through pg_depend (a domain's CHECK calls a
 *   function whose argument is an enum ...) until nothing new appears; extension members and
 *   pg_catalog objects are never created (CREATE EXTENSION brings them);
 * - a view, function, trigger or policy is kept only when every relation and function it needs
 *   is created too; otherwise it is listed in `skipped` with the reason.
 */
import type pg from 'pg';
import { displayName } from '../../../plan/names.js';
import { SYSTEM_SCHEMAS, columnDeps, procDeps, topoSort } from './catalog.js';
import type { ExtensionDef, FunctionDef, PolicyDef, PreDataObject, Skipped, TriggerDef, TypeDef, ViewDef } from './model.js';
import type { TablesRead } from './readTables.js';
import { readExtensions, readProcRows, readTypeDetails, readTypeRows, type ProcRow, type TypeRow } from './readTypes.js';

interface ViewRow {
  oid: number;
  schema: string;
  name: string;
  relkind: string;
  relations: number[];
  columns: string[];
  procs: number[];
  types: number[];
}

export interface ObjectsRead {
  extensions: ExtensionDef[];
  preDataObjects: PreDataObject[];
  functions: FunctionDef[];
  views: ViewDef[];
  triggers: TriggerDef[];
  policies: PolicyDef[];
  skipped: Skipped[];
}

const isSystem = (schema: string) => SYSTEM_SCHEMAS.includes(schema) || schema.startsWith('pg_temp') || schema.startsWith('pg_toast');

export async function readObjects(client: pg.Client, version: number, t: TablesRead): Promise<ObjectsRead> {
  const skipped: Skipped[] = [];
  const tableOids = [...t.tables.keys()];
  const relationsCreated = new Set<number>([...tableOids, ...t.sequences.keys()]);

  const triggers = await readTriggerRows(client, version, tableOids);
  const policies = await readPolicyRows(client, tableOids);
  const views = await readViewRows(client);
  const firstViews = includeViews(views, t, relationsCreated, () => true);
  const viewSet = new Set(firstViews.map((v) => v.oid));

  const schemas = [...new Set([...t.tables.values()].map((x) => x.name.schema))];
  const schemaProcs = await client.query<{ oid: number }>(
    `SELECT p.oid::int AS oid FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
      WHERE n.nspname = ANY($1::text[])
        AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = 'pg_proc'::regclass AND e.objid = p.oid AND e.deptype IN ('e', 'i'))
      ORDER BY n.nspname, p.proname, p.oid`,
    [schemas],
  );

  // Types and functions, transitively.
  const types = new Map<number, TypeRow>();
  const procs = new Map<number, ProcRow>();
  let typeFrontier = [...t.typeSeeds, ...firstViews.flatMap((v) => v.types)];
  let procFrontier = [
    ...t.earlyProcs,
    ...schemaProcs.rows.map((r) => r.oid),
    ...triggers.flatMap((x) => x.procs),
    ...policies.flatMap((x) => x.procs),
    ...firstViews.flatMap((v) => v.procs),
  ];
  while (typeFrontier.length > 0 || procFrontier.length > 0) {
    const newTypes = await readTypeRows(
      client,
      [...new Set(typeFrontier)].filter((o) => !types.has(o)),
    );
    const newProcs = await readProcRows(
      client,
      [...new Set(procFrontier)].filter((o) => !procs.has(o)),
    );
    typeFrontier = [];
    procFrontier = [];
    for (const r of newTypes) {
      types.set(r.oid, r);
      if (isSystem(r.schema) || r.in_extension || ['r', 'p', 'v', 'm', 'f'].includes(r.relkind)) continue;
      typeFrontier.push(...r.types);
      procFrontier.push(...r.procs);
    }
    for (const r of newProcs) {
      procs.set(r.oid, r);
      typeFrontier.push(...r.types);
      procFrontier.push(...r.procs);
    }
  }

  // Types to create: enums, domains, standalone composites, ranges of user schemas.
  const typeDefs = new Map<number, TypeDef>();
  const creatable = [...types.values()].filter(
    (r) => !isSystem(r.schema) && !r.in_extension && (['e', 'd', 'r'].includes(r.typtype) || (r.typtype === 'c' && r.relkind === 'c')),
  );
  for (const r of [...types.values()]) {
    if (!isSystem(r.schema) && !r.in_extension && r.typtype === 'b' && r.relid === 0 && !r.name.startsWith('_'))
      skipped.push({
        phase: 'preData',
        subject: `type ${displayName(r)}`,
        reason: 'a base type (needs C functions); install it on the target first',
      });
  }
  for (const d of await readTypeDetails(client, creatable)) typeDefs.set(d.oid, d.def);

  // Functions: early ones (phase 1) are what defaults, constraints, indexes and types call.
  const early = new Set<number>();
  const earlyFrontier = [...t.earlyProcs, ...creatable.flatMap((r) => r.procs)];
  while (earlyFrontier.length > 0) {
    const o = earlyFrontier.pop()!;
    if (early.has(o) || !procs.has(o)) continue;
    early.add(o);
    earlyFrontier.push(...procs.get(o)!.procs);
  }
  const allowedProcs = new Set<number>();
  const relationOfType = (o: number) => {
    const r = types.get(o);
    return r && ['r', 'p', 'v', 'm', 'f'].includes(r.relkind) ? r.relid : null;
  };
  for (const p of procs.values()) {
    const subject = `function ${displayName(p)}(${p.args})`;
    if (p.definition === null) {
      skipped.push({ phase: 'final', subject, reason: 'aggregates are not replayed; create it on the target by hand' });
      continue;
    }
    const rels = [...p.relations, ...p.types.map(relationOfType).filter((x): x is number => x !== null)];
    const missing = rels.filter((r) => !relationsCreated.has(r) && !viewSet.has(r));
    if (missing.length > 0 && !early.has(p.oid)) {
      skipped.push({ phase: 'final', subject, reason: 'uses a relation that is not migrated' });
      continue;
    }
    allowedProcs.add(p.oid);
  }
  const toFunctionDef = (p: ProcRow): FunctionDef => ({
    name: { schema: p.schema, name: p.name },
    identityArgs: p.args,
    kind: p.kind === 'p' ? 'procedure' : 'function',
    definition: p.definition!,
    early: early.has(p.oid),
    comment: p.comment,
  });

  // Phase 1 order over types and early functions together.
  // A dependency on an array (or multirange) type is one on its element (or range) type.
  const creatableSet = new Set(creatable.map((r) => r.oid));
  const through = (deps: number[]): number[] => {
    const out: number[] = [];
    const seen = new Set<number>();
    const visit = (o: number) => {
      if (seen.has(o)) return;
      seen.add(o);
      const r = types.get(o);
      if (creatableSet.has(o) || !r || isSystem(r.schema) || r.in_extension) out.push(o);
      else r.types.forEach(visit);
    };
    deps.forEach(visit);
    return out;
  };
  type Node = { oid: number; deps: number[]; object: PreDataObject };
  const nodes: Node[] = [
    ...creatable.map((r) => ({ oid: r.oid, deps: [...through(r.types), ...r.procs], object: { type: typeDefs.get(r.oid)! } })),
    ...[...early]
      .filter((o) => allowedProcs.has(o))
      .map((o) => procs.get(o)!)
      .map((p) => ({ oid: p.oid, deps: [...through(p.types), ...p.procs], object: { function: toFunctionDef(p) } })),
  ];
  const preDataObjects = topoSort(
    nodes,
    (n) => n.oid,
    (n) => n.deps,
  ).map((n) => n.object);

  const lateFunctions = [...procs.values()].filter((p) => allowedProcs.has(p.oid) && !early.has(p.oid));
  const finalViews = includeViews(views, t, relationsCreated, (v) => v.procs.every((p) => allowedProcs.has(p)));
  for (const v of views) {
    if (finalViews.includes(v) || !v.relations.some((r) => t.tables.has(r))) continue;
    const omitted = v.columns.some((c) => omittedColumn(t, c));
    const reason = viewSet.has(v.oid)
      ? 'uses a function that is not replayed'
      : omitted
        ? 'uses an omitted column'
        : 'uses a relation that is not migrated';
    skipped.push({ phase: 'final', subject: `${v.relkind === 'm' ? 'materialized view' : 'view'} ${displayName(v)}`, reason });
  }

  const triggerDefs: TriggerDef[] = [];
  for (const x of triggers) {
    const table = t.tables.get(x.rel)!;
    if (x.parent !== 0 && t.tables.has(x.parent_rel ?? -1)) continue; // the parent's trigger creates it
    const subject = `trigger ${x.name} on ${displayName(table.name)}`;
    const refs = [...x.columns, ...x.expr_columns].filter((n) => table.omitted.has(n));
    if (refs.length > 0)
      skipped.push({ phase: 'final', subject, reason: `references omitted column ${refs.map((n) => table.columns.get(n)).join(', ')}` });
    else if (!x.procs.every((p) => allowedProcs.has(p))) skipped.push({ phase: 'final', subject, reason: 'its function is not replayed' });
    else
      triggerDefs.push({
        name: x.name,
        table: table.name,
        definition: x.definition,
        enabled: x.enabled as TriggerDef['enabled'],
        comment: x.comment,
      });
  }

  const policyDefs: PolicyDef[] = [];
  const commands: Record<string, string> = { '*': 'ALL', r: 'SELECT', a: 'INSERT', w: 'UPDATE', d: 'DELETE' };
  for (const x of policies) {
    const table = t.tables.get(x.rel)!;
    const subject = `policy ${x.name} on ${displayName(table.name)}`;
    const refs = x.expr_columns.filter((n) => table.omitted.has(n));
    if (refs.length > 0)
      skipped.push({ phase: 'final', subject, reason: `references omitted column ${refs.map((n) => table.columns.get(n)).join(', ')}` });
    else if (!x.public_only)
      skipped.push({
        phase: 'final',
        subject,
        reason: `names roles (${x.roles.join(', ')}) that may not exist on the target; create it by hand`,
      });
    else if (!x.procs.every((p) => allowedProcs.has(p)))
      skipped.push({ phase: 'final', subject, reason: 'uses a function that is not replayed' });
    else
      policyDefs.push({
        name: x.name,
        table: table.name,
        permissive: x.permissive,
        command: commands[x.cmd] ?? 'ALL',
        using: x.using,
        withCheck: x.with_check,
      });
  }

  return {
    extensions: await readExtensions(client),
    preDataObjects,
    functions: lateFunctions.map(toFunctionDef),
    views: await readViewDetails(client, finalViews),
    triggers: triggerDefs,
    policies: policyDefs,
    skipped,
  };
}

/** `rel:attnum` names a column left out of the target. */
function omittedColumn(t: TablesRead, c: string): boolean {
  const [rel, attnum] = c.split(':').map(Number) as [number, number];
  return t.tables.get(rel)?.omitted.has(attnum) ?? false;
}

/** Views whose relations are all created (migrated tables, their sequences, views kept earlier), in dependency order. */
function includeViews(views: ViewRow[], t: TablesRead, relations: Set<number>, allowed: (v: ViewRow) => boolean): ViewRow[] {
  const schemas = new Set([...t.tables.values()].map((x) => x.name.schema));
  const included: ViewRow[] = [];
  const done = new Set<number>();
  for (;;) {
    const next = views.filter(
      (v) =>
        !done.has(v.oid) &&
        allowed(v) &&
        v.relations.every((r) => relations.has(r) || done.has(r)) &&
        (v.relations.length > 0 || schemas.has(v.schema)) &&
        !v.columns.some((c) => omittedColumn(t, c)),
    );
    if (next.length === 0) return included;
    for (const v of next) {
      done.add(v.oid);
      included.push(v);
    }
  }
}

async function readViewRows(client: pg.Client): Promise<ViewRow[]> {
  const ruleDeps = (refclass: string, what: string, extra = '') =>
    `ARRAY(SELECT DISTINCT ${what} FROM pg_rewrite r JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
            WHERE r.ev_class = c.oid AND d.refclassid = '${refclass}'::regclass ${extra})`;
  const { rows } = await client.query<ViewRow>(
    `SELECT c.oid::int AS oid, n.nspname AS schema, c.relname AS name, c.relkind::text AS relkind,
            ${ruleDeps('pg_class', 'd.refobjid::int', 'AND d.refobjid <> c.oid')} AS relations,
            ${ruleDeps('pg_class', `d.refobjid::text || ':' || d.refobjsubid`, 'AND d.refobjid <> c.oid AND d.refobjsubid > 0')} AS columns,
            ARRAY(SELECT DISTINCT unnest(${procDeps('pg_rewrite', 'r.oid')}) FROM pg_rewrite r WHERE r.ev_class = c.oid) AS procs,
            ${ruleDeps('pg_type', 'd.refobjid::int')} AS types
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind IN ('v', 'm') AND n.nspname <> ALL($1::text[]) AND n.nspname NOT LIKE 'pg\\_temp%' AND n.nspname NOT LIKE 'pg\\_toast%'
        AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = 'pg_class'::regclass AND e.objid = c.oid AND e.deptype = 'e')
      ORDER BY n.nspname, c.relname`,
    [SYSTEM_SCHEMAS],
  );
  return rows;
}

async function readViewDetails(client: pg.Client, views: ViewRow[]): Promise<ViewDef[]> {
  if (views.length === 0) return [];
  const { rows } = await client.query<{ oid: number; definition: string; options: string[]; comment: string | null }>(
    `SELECT c.oid::int AS oid, pg_get_viewdef(c.oid) AS definition, coalesce(c.reloptions, '{}') AS options,
            obj_description(c.oid, 'pg_class') AS comment
       FROM pg_class c WHERE c.oid = ANY($1::oid[])`,
    [views.map((v) => v.oid)],
  );
  const indexes = await client.query<{ rel: number; schema: string; name: string; definition: string }>(
    `SELECT i.indrelid::int AS rel, n.nspname AS schema, ic.relname AS name, pg_get_indexdef(i.indexrelid) AS definition
       FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_namespace n ON n.oid = ic.relnamespace
      WHERE i.indrelid = ANY($1::oid[]) ORDER BY ic.relname`,
    [views.map((v) => v.oid)],
  );
  return views.map((v) => {
    const d = rows.find((r) => r.oid === v.oid)!;
    return {
      name: { schema: v.schema, name: v.name },
      materialized: v.relkind === 'm',
      definition: d.definition,
      options: d.options,
      indexes: indexes.rows
        .filter((i) => i.rel === v.oid)
        .map((i) => ({ name: { schema: i.schema, name: i.name }, definition: i.definition })),
      comment: d.comment,
    };
  });
}

interface TriggerRow {
  rel: number;
  name: string;
  definition: string;
  enabled: string;
  parent: number;
  parent_rel: number | null;
  columns: number[];
  expr_columns: number[];
  procs: number[];
  comment: string | null;
}

async function readTriggerRows(client: pg.Client, version: number, oids: number[]): Promise<TriggerRow[]> {
  const parent = version >= 130000 ? 't.tgparentid' : '0::oid';
  const { rows } = await client.query<TriggerRow>(
    `SELECT t.tgrelid::int AS rel, t.tgname AS name, pg_get_triggerdef(t.oid) AS definition, t.tgenabled::text AS enabled,
            ${parent}::int AS parent, (SELECT tp.tgrelid::int FROM pg_trigger tp WHERE tp.oid = ${parent}) AS parent_rel,
            (t.tgattr::int2[])::int[] AS columns, ${columnDeps('pg_trigger', 't.oid', 't.tgrelid')} AS expr_columns,
            ${procDeps('pg_trigger', 't.oid')} AS procs, obj_description(t.oid, 'pg_trigger') AS comment
       FROM pg_trigger t
      WHERE t.tgrelid = ANY($1::oid[]) AND NOT t.tgisinternal
      ORDER BY t.tgrelid, t.tgname`,
    [oids],
  );
  return rows;
}

interface PolicyRow {
  rel: number;
  name: string;
  permissive: boolean;
  cmd: string;
  public_only: boolean;
  roles: string[];
  using: string | null;
  with_check: string | null;
  expr_columns: number[];
  procs: number[];
}

async function readPolicyRows(client: pg.Client, oids: number[]): Promise<PolicyRow[]> {
  const { rows } = await client.query<PolicyRow>(
    `SELECT p.polrelid::int AS rel, p.polname AS name, p.polpermissive AS permissive, p.polcmd::text AS cmd,
            p.polroles = '{0}'::oid[] AS public_only,
            ARRAY(SELECT CASE WHEN r = 0 THEN 'PUBLIC' ELSE (SELECT rolname::text FROM pg_roles WHERE oid = r) END FROM unnest(p.polroles) r) AS roles,
            pg_get_expr(p.polqual, p.polrelid) AS using, pg_get_expr(p.polwithcheck, p.polrelid) AS with_check,
            ${columnDeps('pg_policy', 'p.oid', 'p.polrelid')} AS expr_columns, ${procDeps('pg_policy', 'p.oid')} AS procs
       FROM pg_policy p WHERE p.polrelid = ANY($1::oid[])
      ORDER BY p.polrelid, p.polname`,
    [oids],
  );
  return rows;
}
