/**
 * Catalog introspection of one table: kind, keys, replica identity, columns and size estimates.
 * Read-only and cheap (catalog statistics, never count(*)); shared by preflight and the copy.
 */
import type pg from 'pg';
import type { DocumentPlan } from '../plan/defaults.js';
import { displayName, type QualifiedName } from '../plan/names.js';
import { templateColumns } from '../plan/templates.js';

export interface ColumnInfo {
  name: string;
  /** format_type(): e.g. "numeric(30,10)", "public.mood[]". */
  type: string;
  typeName: string;
  /** For a domain, its base type's name (contrib's `lo` is a domain over oid); else typeName. */
  baseTypeName: string;
  /** pg_type.typtype: b base, c composite, d domain, e enum, r range, m multirange, p pseudo. */
  typtype: string;
  /** Schema of the type (extension and user types live outside pg_catalog). */
  typeSchema: string;
  /** atttypmod: a length, precision or the like; -1 for none. */
  typmod: number;
  notNull: boolean;
  /** The type has a collation (text-like): key ranges compare it with COLLATE "C". */
  collatable: boolean;
  generated: boolean;
  identity: 'always' | 'by default' | null;
}

export interface UniqueKey {
  name: string;
  columns: string[];
  primary: boolean;
  /** Every column NOT NULL, the index not partial nor deferrable: usable as REPLICA IDENTITY USING INDEX. */
  usableAsIdentity: boolean;
}

export interface TableInfo {
  oid: number;
  kind: 'table' | 'partitioned' | 'other';
  relkind: string;
  isPartition: boolean;
  partitionCount: number;
  /** Table inheritance (INHERITS, not partitioning): the tables it inherits from, and those inheriting from it. */
  inherits: string[];
  inheritedBy: string[];
  /** d default (primary key), n nothing, f full, i index. */
  replicaIdentity: 'd' | 'n' | 'f' | 'i';
  canSelect: boolean;
  columns: ColumnInfo[];
  primaryKey: string[] | null;
  uniqueKeys: UniqueKey[];
  /** From the statistics, scaled to the table's size now (rowsNow); null when they cannot tell. */
  estimatedRows: number | null;
  bytes: number;
}

/** The source columns the copy writes: all but generated ones (computed by the target) and `omit`. */
export function writtenColumns(info: TableInfo, omit: readonly string[] = []): ColumnInfo[] {
  return info.columns.filter((c) => !c.generated && !omit.includes(c.name));
}

/** The key batches are cut by: the primary key, else a unique index usable as replica identity; null for none. */
export function batchKey(info: TableInfo): UniqueKey | null {
  return info.uniqueKeys.find((k) => k.primary) ?? info.uniqueKeys.find((k) => k.usableAsIdentity) ?? null;
}

/**
 * Rows of relation `r` now, as the planner estimates them: the density its statistics saw
 * (reltuples / relpages) times the pages it has now, so a table analysed small (or empty) and
 * loaded since is not taken for small. NULL when that cannot be known (never analysed, or
 * analysed empty and no longer empty).
 */
function rowsNow(r: string): string {
  const pagesNow = `(pg_relation_size(${r}.oid) / current_setting('block_size')::float8)`;
  return `CASE WHEN ${r}.reltuples >= 0 AND ${r}.relpages > 0 THEN ${r}.reltuples / ${r}.relpages * ${pagesNow}
               WHEN ${r}.reltuples >= 0 AND ${pagesNow} = 0 THEN 0 END`;
}

export async function introspectTable(client: pg.Client, name: QualifiedName): Promise<TableInfo | null> {
  const { rows } = await client.query<{
    oid: number;
    relkind: string;
    relispartition: boolean;
    relreplident: string;
    can_select: boolean;
    reltuples: number | null;
    bytes: string;
    partitions: number;
    inherits: string[] | null;
    inherited_by: string[] | null;
  }>(
    `SELECT c.oid::int AS oid, c.relkind::text AS relkind, c.relispartition, c.relreplident::text AS relreplident,
            has_table_privilege(c.oid, 'SELECT') AS can_select,
            CASE WHEN c.relkind = 'p'
                 THEN (SELECT CASE WHEN bool_and(e IS NOT NULL) THEN sum(e) END
                         FROM (SELECT ${rowsNow('p')} AS e FROM pg_partition_tree(c.oid) t JOIN pg_class p ON p.oid = t.relid WHERE t.isleaf) l)
                 ELSE ${rowsNow('c')} END::float8 AS reltuples,
            CASE WHEN c.relkind = 'p'
                 THEN coalesce((SELECT sum(pg_table_size(t.relid)) FROM pg_partition_tree(c.oid) t WHERE t.isleaf), 0)
                 ELSE pg_table_size(c.oid) END::text AS bytes,
            (SELECT count(*) FROM pg_inherits i WHERE i.inhparent = c.oid)::int AS partitions,
            CASE WHEN NOT c.relispartition THEN
              (SELECT array_agg(i.inhparent::regclass::text ORDER BY i.inhseqno) FROM pg_inherits i WHERE i.inhrelid = c.oid) END AS inherits,
            CASE WHEN c.relkind = 'r' THEN
              (SELECT array_agg(i.inhrelid::regclass::text ORDER BY i.inhrelid::regclass::text) FROM pg_inherits i WHERE i.inhparent = c.oid) END AS inherited_by
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND c.relname = $2`,
    [name.schema, name.name],
  );
  const t = rows[0];
  if (!t) return null;

  const columns = await client.query<{
    name: string;
    type: string;
    type_name: string;
    base_type_name: string;
    typtype: string;
    type_schema: string;
    typmod: number;
    notnull: boolean;
    collatable: boolean;
    generated: string;
    identity: string;
  }>(
    `SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type, ty.typname AS type_name,
            COALESCE((SELECT b.typname FROM pg_type b WHERE ty.typtype = 'd' AND b.oid = ty.typbasetype), ty.typname) AS base_type_name,
            CASE WHEN ty.typcategory = 'A' THEN (SELECT e.typtype::text FROM pg_type e WHERE e.oid = ty.typelem) ELSE ty.typtype::text END AS typtype,
            tn.nspname AS type_schema, a.atttypmod AS typmod, a.attnotnull AS notnull, ty.typcollation <> 0 AS collatable, a.attgenerated::text AS generated, a.attidentity::text AS identity
       FROM pg_attribute a
       JOIN pg_type ty ON ty.oid = a.atttypid
       JOIN pg_namespace tn ON tn.oid = ty.typnamespace
      WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
      ORDER BY a.attnum`,
    [t.oid],
  );

  const keys = await client.query<{
    name: string;
    primary: boolean;
    partial: boolean;
    immediate: boolean;
    columns: string[];
    all_not_null: boolean;
  }>(
    `SELECT ic.relname AS name, i.indisprimary AS primary, i.indpred IS NOT NULL AS partial, i.indimmediate AS immediate,
            array_agg(a.attname::text ORDER BY k.ord) AS columns,
            bool_and(a.attnotnull) AS all_not_null
       FROM pg_index i
       JOIN pg_class ic ON ic.oid = i.indexrelid
       CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
       JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
      WHERE i.indrelid = $1 AND i.indisunique AND i.indisvalid AND i.indexprs IS NULL
      GROUP BY ic.relname, i.indisprimary, i.indpred, i.indimmediate
      ORDER BY i.indisprimary DESC, ic.relname`,
    [t.oid],
  );
  const uniqueKeys: UniqueKey[] = keys.rows.map((k) => ({
    name: k.name,
    columns: k.columns,
    primary: k.primary,
    // As PostgreSQL requires of REPLICA IDENTITY USING INDEX: not partial, every column NOT NULL, not deferrable.
    usableAsIdentity: !k.partial && k.all_not_null && k.immediate,
  }));
  const pk = uniqueKeys.find((k) => k.primary);

  return {
    oid: t.oid,
    kind: t.relkind === 'r' ? 'table' : t.relkind === 'p' ? 'partitioned' : 'other',
    relkind: t.relkind,
    isPartition: t.relispartition,
    partitionCount: t.partitions,
    inherits: t.inherits ?? [],
    inheritedBy: t.inherited_by ?? [],
    replicaIdentity: t.relreplident as TableInfo['replicaIdentity'],
    canSelect: t.can_select,
    columns: columns.rows.map((c) => ({
      name: c.name,
      type: c.type,
      typeName: c.type_name,
      baseTypeName: c.base_type_name,
      typtype: c.typtype,
      typeSchema: c.type_schema,
      typmod: c.typmod,
      notNull: c.notnull,
      collatable: c.collatable,
      generated: c.generated !== '',
      identity: c.identity === 'a' ? 'always' : c.identity === 'd' ? 'by default' : null,
    })),
    primaryKey: pk ? pk.columns : null,
    uniqueKeys,
    estimatedRows: t.reltuples === null ? null : Math.round(t.reltuples),
    bytes: Number(t.bytes),
  };
}

/**
 * Why a table in an inheritance hierarchy (INHERITS) cannot be copied: a SELECT from the parent
 * reads its children's rows too, and the target would get them twice (in the parent and in each
 * child) or, with only the parent planned, a table holding rows the source keeps elsewhere. Null
 * for tables outside one; a child alone is copied as a standalone table (see `inherits`).
 */
export function inheritanceProblem(info: TableInfo, subject: string): { message: string; hint: string } | null {
  if (info.inheritedBy.length === 0) return null;
  return {
    message: `${subject} has tables inheriting from it (${info.inheritedBy.join(', ')}): a copy of it would hold their rows too, and the target does not recreate the hierarchy`,
    hint: 'convert the hierarchy to declarative partitioning (PARTITION BY) first; a child table without children of its own is copied as a standalone table',
  };
}

/** Types whose values are OIDs of catalog objects: their numbers differ on the target. */
export const OID_REFERENCE_TYPES = new Set([
  'regproc',
  'regprocedure',
  'regoper',
  'regoperator',
  'regconfig',
  'regdictionary',
  'regcollation',
]);

export function relkindName(relkind: string): string {
  const names: Record<string, string> = {
    v: 'a view',
    m: 'a materialized view',
    f: 'a foreign table',
    S: 'a sequence',
    i: 'an index',
    c: 'a composite type',
  };
  return names[relkind] ?? `a relation of kind ${relkind}`;
}

/** How a documents content column holds its documents: bytea, a large object's oid (a domain over oid too), or neither. */
export function contentKind(column: ColumnInfo): 'bytea' | 'oid' | null {
  return column.baseTypeName === 'bytea' ? 'bytea' : column.baseTypeName === 'oid' ? 'oid' : null;
}

/**
 * What is wrong with the placeholders of a documents entry's templates on this table: a name
 * that is no column, a generated column (not copied, so the copy has no value for it; live sync
 * gets none in the WAL either), or the content column itself. Empty when every one can be filled.
 */
export function placeholderProblems(d: DocumentPlan, info: TableInfo): string[] {
  const where = `documents[${d.index}]`;
  const byName = new Map(info.columns.map((c) => [c.name, c]));
  const templates: Array<[string, string]> = [
    ['blob', d.blob],
    ['contentType', d.contentType],
    ...Object.entries(d.metadata).map(([k, v]): [string, string] => [`metadata.${k}`, v]),
    ...Object.entries(d.tags).map(([k, v]): [string, string] => [`tags.${k}`, v]),
  ];
  return templates.flatMap(([field, template]) =>
    templateColumns(template).flatMap((c) => {
      const column = byName.get(c);
      const at = `{${c}} in ${where}.${field}`;
      if (!column) return [`${at} is not a column of ${displayName(d.table)}`];
      if (column.generated) return [`${at} is a generated column, whose value is not copied: name the columns it is computed from`];
      if (c === d.content) return [`${at} is the content column`];
      return [];
    }),
  );
}

/**
 * Whether the blob template names every row apart: the unique key all of whose columns it
 * includes, or else why two rows can get the same name (one blob would hold the other's
 * document).
 */
export function blobNameKey(d: DocumentPlan, info: TableInfo): { key: UniqueKey } | { problem: string } {
  const nameColumns = new Set(templateColumns(d.blob));
  const key = info.uniqueKeys.find((k) => k.usableAsIdentity && k.columns.every((c) => nameColumns.has(c)));
  if (key) return { key };
  const suggestion = info.primaryKey ? ` such as {${info.primaryKey.join('}, {')}}` : '';
  return {
    problem: `the blob template "${d.blob}" can give two rows the same name: include every column of a unique key${suggestion} (documents[${d.index}].blob)`,
  };
}
