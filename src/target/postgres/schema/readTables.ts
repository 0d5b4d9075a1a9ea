/**
 * Reading the migrated tables from the source catalogs: the selected tables and all their
 * partitions, columns and the sequences they own or use (keys and indexes: readKeys.ts).
 * Invariants:
 * - runs inside withCatalogSession (search_path = ''), so every printed name is qualified;
 * - an omitted column is never in a TableDef, and whatever references one (a generated column,
 *   a constraint, an index, statistics) is recorded in `skipped` instead of being created;
 * - constraints PostgreSQL copies onto partitions by itself are never created, only renamed to
 *   their source names (ConstraintDef.clones).
 */
import type pg from 'pg';
import { PreconditionError } from '../../../errors.js';
import { displayName, type QualifiedName } from '../../../plan/names.js';
import { requireListedSequences } from '../../../source/listedSequences.js';
import { collationName, columnDeps, procDeps, typeDeps } from './catalog.js';
import { readConstraints, readIndexes, readStatistics } from './readKeys.js';
import type {
  ColumnDef,
  ConstraintDef,
  IndexDef,
  SequenceDef,
  SequenceOptions,
  Skipped,
  StatisticsDef,
  TableDef,
  TableSelection,
} from './model.js';

export interface TableCtx {
  oid: number;
  name: QualifiedName;
  /** Oid of the migrated parent when this is a partition of a migrated table. */
  parent: number | null;
  depth: number;
  /** Every source column, attnum → name. */
  columns: Map<number, string>;
  /** Attnums not on the target: omitted, or generated from an omitted column. */
  omitted: Set<number>;
  def: TableDef;
}

export interface TablesRead {
  tables: Map<number, TableCtx>;
  sequences: Map<number, SequenceDef>;
  indexes: IndexDef[];
  constraints: ConstraintDef[];
  statistics: StatisticsDef[];
  /** Post-data settings of constraint indexes: CLUSTER ON, REPLICA IDENTITY USING INDEX. */
  constraintIndexSettings: IndexDef[];
  typeSeeds: Set<number>;
  /** Functions that column defaults, constraints, indexes and statistics call. */
  earlyProcs: Set<number>;
  skipped: Skipped[];
}

const rel = (t: TableCtx) => displayName(t.name);

export async function readTables(
  client: pg.Client,
  version: number,
  selections: TableSelection[],
  /** The plan's `sequences`: created whatever uses them. */
  listedSequences: QualifiedName[] = [],
): Promise<TablesRead> {
  const skipped: Skipped[] = [];
  const tables = await resolveTables(client, selections, skipped);
  const out: TablesRead = {
    tables,
    sequences: new Map(),
    indexes: [],
    constraints: [],
    statistics: [],
    constraintIndexSettings: [],
    typeSeeds: new Set(),
    earlyProcs: new Set(),
    skipped,
  };
  const oids = [...tables.keys()];
  await readColumns(client, version, out, oids, selections);
  await readSequences(client, out, oids, await requireListedSequences(client, listedSequences));
  await readConstraints(client, out, oids);
  await readIndexes(client, out, oids);
  await readStatistics(client, out, oids);
  return out;
}

async function resolveTables(client: pg.Client, selections: TableSelection[], skipped: Skipped[]): Promise<Map<number, TableCtx>> {
  const found: Array<{ sel: TableSelection; oid: number; relkind: string; partition: boolean }> = [];
  for (const sel of selections) {
    const { rows } = await client.query<{ oid: number; relkind: string; relispartition: boolean }>(
      `SELECT c.oid::int AS oid, c.relkind::text AS relkind, c.relispartition
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2`,
      [sel.name.schema, sel.name.name],
    );
    const r = rows[0];
    if (!r) throw new PreconditionError(`table ${displayName(sel.name)} does not exist on the source`);
    if (r.relkind !== 'r' && r.relkind !== 'p')
      throw new PreconditionError(`${displayName(sel.name)} is not a table on the source (relkind ${r.relkind})`);
    found.push({ sel, oid: r.oid, relkind: r.relkind, partition: r.relispartition });
  }
  // Whole trees first, so a partition also named on its own keeps its parent's selection.
  found.sort((a, b) => Number(a.partition) - Number(b.partition));
  const tables = new Map<number, TableCtx>();
  for (const f of found) {
    if (tables.has(f.oid)) continue;
    const { rows } = await client.query<{
      oid: number;
      parent: number | null;
      level: number;
      schema: string;
      name: string;
      relkind: string;
    }>(
      `SELECT t.relid::oid::int AS oid, t.parentrelid::oid::int AS parent, t.level, n.nspname AS schema, c.relname AS name, c.relkind::text AS relkind
         FROM pg_partition_tree($1::oid::regclass) t JOIN pg_class c ON c.oid = t.relid JOIN pg_namespace n ON n.oid = c.relnamespace
        ORDER BY t.level, n.nspname, c.relname`,
      [f.oid],
    );
    // pg_partition_tree() has no row for a table that is neither partitioned nor a partition.
    if (rows.length === 0)
      rows.push({ oid: f.oid, parent: null, level: 0, schema: f.sel.name.schema, name: f.sel.name.name, relkind: f.relkind });
    for (const r of rows) {
      if (tables.has(r.oid)) continue;
      if (r.relkind !== 'r' && r.relkind !== 'p') {
        const what = r.relkind === 'f' ? 'a foreign table' : `of relkind ${r.relkind}`;
        skipped.push({
          phase: 'preData',
          subject: `partition ${displayName(r)}`,
          reason: `is ${what}; rows routed to it cannot be migrated`,
        });
        continue;
      }
      const parent = r.oid === f.oid || r.parent === null || !tables.has(r.parent) ? null : r.parent;
      tables.set(r.oid, {
        oid: r.oid,
        name: { schema: r.schema, name: r.name },
        parent,
        depth: parent === null ? 0 : tables.get(parent)!.depth + 1,
        columns: new Map(),
        omitted: new Set(),
        def: emptyTable({ schema: r.schema, name: r.name }, r.oid === f.oid ? f.sel.addColumns : []),
      });
    }
  }
  return tables;
}

function emptyTable(name: QualifiedName, addColumns: TableSelection['addColumns']): TableDef {
  return {
    name,
    partitioned: false,
    unlogged: false,
    partitionKey: null,
    partitionOf: null,
    columns: [],
    addColumns: addColumns.map((a) => ({ name: a.name, type: a.type })),
    constraints: [],
    reloptions: [],
    toastOptions: [],
    accessMethod: null,
    replicaIdentity: 'd',
    rowSecurity: false,
    forceRowSecurity: false,
    bytes: 0,
    comment: null,
  };
}

function selectionOf(t: TableCtx, tables: Map<number, TableCtx>, selections: TableSelection[]): TableSelection | undefined {
  let root = t;
  while (root.parent !== null) root = tables.get(root.parent)!;
  return selections.find((s) => s.name.schema === root.name.schema && s.name.name === root.name.name);
}

async function readColumns(client: pg.Client, version: number, out: TablesRead, oids: number[], selections: TableSelection[]) {
  const facts = await client.query<{
    oid: number;
    relkind: string;
    persistence: string;
    replident: string;
    rls: boolean;
    force_rls: boolean;
    reloptions: string[];
    toast_options: string[];
    partkey: string | null;
    bound: string | null;
    am: string | null;
    bytes: string;
    comment: string | null;
  }>(
    `SELECT c.oid::int AS oid, c.relkind::text AS relkind, c.relpersistence::text AS persistence, c.relreplident::text AS replident,
            c.relrowsecurity AS rls, c.relforcerowsecurity AS force_rls, coalesce(c.reloptions, '{}') AS reloptions,
            coalesce((SELECT tc.reloptions FROM pg_class tc WHERE tc.oid = c.reltoastrelid), '{}') AS toast_options,
            CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END AS partkey,
            CASE WHEN c.relispartition THEN pg_get_expr(c.relpartbound, c.oid) END AS bound,
            (SELECT am.amname FROM pg_am am WHERE am.oid = c.relam) AS am,
            (CASE WHEN c.relkind = 'p' THEN 0 ELSE pg_table_size(c.oid) END)::text AS bytes,
            obj_description(c.oid, 'pg_class') AS comment
       FROM pg_class c WHERE c.oid = ANY($1::oid[])`,
    [oids],
  );
  for (const f of facts.rows) {
    const t = out.tables.get(f.oid)!;
    const d = t.def;
    d.partitioned = f.relkind === 'p';
    d.unlogged = f.persistence === 'u';
    d.partitionKey = f.partkey;
    d.reloptions = f.reloptions;
    d.toastOptions = f.toast_options;
    d.accessMethod = f.am && f.am !== 'heap' ? f.am : null;
    d.replicaIdentity = f.replident as TableDef['replicaIdentity'];
    d.rowSecurity = f.rls;
    d.forceRowSecurity = f.force_rls;
    d.bytes = Number(f.bytes);
    d.comment = f.comment;
    if (t.parent !== null && f.bound !== null) d.partitionOf = { parent: out.tables.get(t.parent)!.name, bound: f.bound };
  }
  for (const t of out.tables.values()) {
    if (t.def.partitioned) {
      let sum = 0;
      for (const c of out.tables.values()) if (!c.def.partitioned && isDescendant(out.tables, c, t.oid)) sum += c.def.bytes;
      t.def.bytes = sum;
    }
  }

  const { rows } = await client.query<{
    rel: number;
    attnum: number;
    name: string;
    type: string;
    type_oid: number;
    collation: string | null;
    not_null: boolean;
    identity: string;
    generated: string;
    expr: string | null;
    expr_columns: number[];
    procs: number[];
    types: number[];
    statistics: number | null;
    storage: string | null;
    compression: string | null;
    options: string[];
    comment: string | null;
    identity_sequence: number | null;
  }>(
    `SELECT a.attrelid::int AS rel, a.attnum::int AS attnum, a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type,
            a.atttypid::int AS type_oid,
            CASE WHEN a.attcollation <> 0 AND a.attcollation <> t.typcollation THEN ${collationName('a.attcollation')} END AS collation,
            a.attnotnull AS not_null, a.attidentity::text AS identity, a.attgenerated::text AS generated,
            pg_get_expr(d.adbin, d.adrelid) AS expr,
            ${columnDeps('pg_attrdef', 'd.oid', 'a.attrelid')} AS expr_columns,
            ${procDeps('pg_attrdef', 'd.oid')} AS procs,
            ${typeDeps('pg_attrdef', 'd.oid')} AS types,
            CASE WHEN a.attstattarget >= 0 THEN a.attstattarget::int END AS statistics,
            CASE WHEN a.attstorage <> t.typstorage THEN a.attstorage::text END AS storage,
            ${version >= 140000 ? `nullif(a.attcompression::text, '')` : 'NULL::text'} AS compression,
            coalesce(a.attoptions, '{}') AS options,
            col_description(a.attrelid, a.attnum) AS comment,
            (SELECT s.oid::int FROM pg_depend dd JOIN pg_class s ON s.oid = dd.objid AND s.relkind = 'S'
              WHERE dd.classid = 'pg_class'::regclass AND dd.refclassid = 'pg_class'::regclass AND dd.refobjid = a.attrelid
                AND dd.refobjsubid = a.attnum AND dd.deptype = 'i' LIMIT 1) AS identity_sequence
       FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
       LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
      WHERE a.attrelid = ANY($1::oid[]) AND a.attnum > 0 AND NOT a.attisdropped
      ORDER BY a.attrelid, a.attnum`,
    [oids],
  );

  const identitySeqs = [...new Set(rows.map((r) => r.identity_sequence).filter((x): x is number => x !== null))];
  const seqOptions = await readSequenceRows(client, identitySeqs);

  for (const t of out.tables.values()) {
    const sel = selectionOf(t, out.tables, selections);
    const omit = new Set(sel?.omitColumns ?? []);
    const cols = rows.filter((r) => r.rel === t.oid);
    for (const c of cols) t.columns.set(c.attnum, c.name);
    for (const name of omit) {
      if (!cols.some((c) => c.name === name))
        throw new PreconditionError(`column ${name} of ${rel(t)} does not exist on the source (omitted column)`);
    }
    for (const a of t.def.addColumns) {
      if (cols.some((c) => c.name === a.name && !omit.has(c.name)))
        throw new PreconditionError(`column ${a.name} to add to ${rel(t)} already exists on the source`);
    }
    for (const c of cols) if (omit.has(c.name)) t.omitted.add(c.attnum);
    for (const c of cols) {
      if (t.omitted.has(c.attnum)) continue;
      const refs = c.expr_columns.filter((n) => t.omitted.has(n));
      if (c.generated !== '' && refs.length > 0) {
        t.omitted.add(c.attnum);
        out.skipped.push({
          phase: 'preData',
          subject: `generated column ${rel(t)}.${c.name}`,
          reason: `references omitted column ${refs.map((n) => t.columns.get(n)).join(', ')}`,
        });
        continue;
      }
      out.typeSeeds.add(c.type_oid);
      for (const x of c.types) out.typeSeeds.add(x);
      for (const p of c.procs) out.earlyProcs.add(p);
      const seq = c.identity_sequence === null ? undefined : seqOptions.get(c.identity_sequence);
      const column: ColumnDef = {
        name: c.name,
        type: c.type,
        collation: c.collation,
        default: c.generated === '' ? c.expr : null,
        notNull: c.not_null,
        identity:
          c.identity !== '' && seq
            ? { kind: c.identity === 'a' ? 'always' : 'by default', sequence: seq.name, options: sequenceOptions(seq) }
            : null,
        generated: c.generated !== '' ? c.expr : null,
        statistics: c.statistics,
        storage: c.storage,
        compression: c.compression,
        options: c.options,
        comment: c.comment,
      };
      t.def.columns.push(column);
    }
  }
}

function isDescendant(tables: Map<number, TableCtx>, t: TableCtx, ancestor: number): boolean {
  for (let p = t.parent; p !== null; p = tables.get(p)!.parent) if (p === ancestor) return true;
  return false;
}

function sequenceOptions(s: SequenceDef): SequenceOptions {
  return { dataType: s.dataType, start: s.start, increment: s.increment, min: s.min, max: s.max, cache: s.cache, cycle: s.cycle };
}

async function readSequenceRows(client: pg.Client, oids: number[]): Promise<Map<number, SequenceDef>> {
  const map = new Map<number, SequenceDef>();
  if (oids.length === 0) return map;
  const { rows } = await client.query<{
    oid: number;
    schema: string;
    name: string;
    data_type: string;
    start: string;
    increment: string;
    min: string;
    max: string;
    cache: string;
    cycle: boolean;
    unlogged: boolean;
    comment: string | null;
  }>(
    `SELECT s.seqrelid::int AS oid, n.nspname AS schema, c.relname AS name, format_type(s.seqtypid, NULL) AS data_type,
            s.seqstart::text AS start, s.seqincrement::text AS increment, s.seqmin::text AS min, s.seqmax::text AS max,
            s.seqcache::text AS cache, s.seqcycle AS cycle, c.relpersistence = 'u' AS unlogged,
            obj_description(c.oid, 'pg_class') AS comment
       FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE s.seqrelid = ANY($1::oid[])
      ORDER BY n.nspname, c.relname`,
    [oids],
  );
  for (const r of rows) {
    map.set(r.oid, {
      name: { schema: r.schema, name: r.name },
      dataType: r.data_type,
      start: r.start,
      increment: r.increment,
      min: r.min,
      max: r.max,
      cache: r.cache,
      cycle: r.cycle,
      unlogged: r.unlogged,
      ownedBy: null,
      comment: r.comment,
    });
  }
  return map;
}

/**
 * Sequences owned by (serial) or used in the defaults of kept columns, and those the plan lists;
 * identity sequences of migrated tables excluded (each is created with its column).
 */
async function readSequences(client: pg.Client, out: TablesRead, oids: number[], listed: number[]) {
  const { rows } = await client.query<{ seq: number; rel: number; attnum: number; how: 'owned' | 'used' }>(
    `SELECT d.objid::int AS seq, d.refobjid::int AS rel, d.refobjsubid::int AS attnum, 'owned' AS how
       FROM pg_depend d JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
      WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass AND d.refobjid = ANY($1::oid[])
        AND d.refobjsubid > 0 AND d.deptype = 'a'
     UNION ALL
     SELECT d.refobjid::int, ad.adrelid::int, ad.adnum::int, 'used'
       FROM pg_attrdef ad
       JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid AND d.refclassid = 'pg_class'::regclass
       JOIN pg_class s ON s.oid = d.refobjid AND s.relkind = 'S'
      WHERE ad.adrelid = ANY($1::oid[])`,
    [oids],
  );
  const kept = rows.filter((r) => !out.tables.get(r.rel)!.omitted.has(r.attnum));
  const { rows: identities } = await client.query<{ seq: number }>(
    `SELECT objid::int AS seq FROM pg_depend
      WHERE classid = 'pg_class'::regclass AND objid = ANY($1::oid[]) AND refobjid = ANY($2::oid[]) AND deptype = 'i'`,
    [listed, oids],
  );
  const identity = new Set(identities.map((r) => r.seq));
  const defs = await readSequenceRows(client, [...new Set([...kept.map((r) => r.seq), ...listed.filter((q) => !identity.has(q))])]);
  for (const r of kept) {
    const s = defs.get(r.seq);
    if (s && r.how === 'owned') {
      const t = out.tables.get(r.rel)!;
      s.ownedBy = { table: t.name, column: t.columns.get(r.attnum)! };
    }
  }
  out.sequences = defs;
}
