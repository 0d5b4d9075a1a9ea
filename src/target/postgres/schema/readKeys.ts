/**
 * Reading the keys and indexes of the migrated tables: constraints (CHECK and PRIMARY KEY for
 * phase 1, UNIQUE / EXCLUDE / FOREIGN KEY for phase 2), indexes and extended statistics.
 * Invariants:
 * - runs inside withCatalogSession (search_path = ''), so every printed definition is qualified;
 * - whatever references an omitted column, or a table that is not migrated, goes to `skipped`;
 * - copies PostgreSQL makes by itself on partitions (constraint clones, indexes attached to a
 *   partitioned index) are not listed as objects of their own: they hang off their top-level
 *   constraint (clones, renamed later) or index (children, created and attached in one unit);
 * - indexes that back constraints are created by their constraint, never on their own.
 */
import type pg from 'pg';
import { displayName, type QualifiedName } from '../../../plan/names.js';
import { columnDeps, procDeps, typeDeps } from './catalog.js';
import type { CloneDef, ConstraintDef, IndexDef } from './model.js';
import type { TableCtx, TablesRead } from './readTables.js';

const rel = (t: TableCtx) => displayName(t.name);

export async function readConstraints(client: pg.Client, out: TablesRead, oids: number[]) {
  const { rows } = await client.query<{
    oid: number;
    rel: number;
    name: string;
    type: ConstraintDef['type'];
    definition: string;
    validated: boolean;
    referenced: number;
    parent: number;
    inherited: number;
    columns: number[];
    ref_columns: number[];
    expr_columns: number[];
    procs: number[];
    types: number[];
    comment: string | null;
  }>(
    `SELECT c.oid::int AS oid, c.conrelid::int AS rel, c.conname AS name, c.contype::text AS type,
            pg_get_constraintdef(c.oid) AS definition, c.convalidated AS validated, c.confrelid::int AS referenced,
            c.conparentid::int AS parent, c.coninhcount::int AS inherited,
            coalesce(c.conkey::int[], '{}') AS columns, coalesce(c.confkey::int[], '{}') AS ref_columns,
            ${columnDeps('pg_constraint', 'c.oid', 'c.conrelid')} AS expr_columns,
            ${procDeps('pg_constraint', 'c.oid')} AS procs,
            ${typeDeps('pg_constraint', 'c.oid')} AS types,
            obj_description(c.oid, 'pg_constraint') AS comment
       FROM pg_constraint c
      WHERE c.conrelid = ANY($1::oid[]) AND c.contype IN ('c', 'p', 'u', 'x', 'f')
      ORDER BY c.conrelid, c.contype, c.conname`,
    [oids],
  );
  const byOid = new Map(rows.map((r) => [r.oid, r]));
  const isClone = (r: (typeof rows)[number]) => r.parent !== 0 && byOid.has(r.parent);
  const defs = new Map<number, ConstraintDef>();
  const kind: Record<string, string> = {
    c: 'check constraint',
    p: 'primary key',
    u: 'unique constraint',
    x: 'exclusion constraint',
    f: 'foreign key',
  };

  for (const r of rows) {
    if (isClone(r)) continue;
    const t = out.tables.get(r.rel)!;
    if (r.type === 'c' && r.inherited > 0 && t.parent !== null) continue; // comes with the parent
    const subject = `${kind[r.type]} ${r.name} on ${rel(t)}`;
    const phase = r.type === 'c' || r.type === 'p' ? 'preData' : 'postData';
    const refs = [...r.columns, ...r.expr_columns].filter((n) => t.omitted.has(n));
    if (refs.length > 0) {
      out.skipped.push({
        phase,
        subject,
        reason: `references omitted column ${[...new Set(refs)].map((n) => t.columns.get(n)).join(', ')}`,
      });
      continue;
    }
    let references: QualifiedName | null = null;
    if (r.type === 'f') {
      const target = out.tables.get(r.referenced);
      if (!target) {
        out.skipped.push({ phase, subject, reason: 'the referenced table is not migrated' });
        continue;
      }
      const omittedRefs = r.ref_columns.filter((n) => target.omitted.has(n));
      if (omittedRefs.length > 0) {
        out.skipped.push({
          phase,
          subject,
          reason: `references omitted column ${omittedRefs.map((n) => target.columns.get(n)).join(', ')}`,
        });
        continue;
      }
      references = target.name;
    }
    for (const p of r.procs) out.earlyProcs.add(p);
    for (const x of r.types) out.typeSeeds.add(x);
    const def: ConstraintDef = {
      name: r.name,
      table: t.name,
      type: r.type,
      definition: r.definition,
      validated: r.validated,
      references,
      onPartitioned: t.def.partitioned,
      clones: [],
      comment: r.comment,
    };
    defs.set(r.oid, def);
    if (phase === 'preData') t.def.constraints.push(def);
    else out.constraints.push(def);
  }

  // Copies on partitions, parents before children, attached to their top-level constraint.
  const depthOf = (r: (typeof rows)[number]): number => (isClone(r) ? depthOf(byOid.get(r.parent)!) + 1 : 0);
  const topOf = (r: (typeof rows)[number]): number => (isClone(r) ? topOf(byOid.get(r.parent)!) : r.oid);
  const clones = rows.filter(isClone).sort((a, b) => depthOf(a) - depthOf(b));
  for (const r of clones) {
    const top = defs.get(topOf(r));
    if (!top) continue;
    const parent = byOid.get(r.parent)!;
    const clone: CloneDef = {
      table: out.tables.get(r.rel)!.name,
      name: r.name,
      parentTable: out.tables.get(parent.rel)!.name,
      parentName: parent.name,
      references: r.type === 'f' ? (out.tables.get(r.referenced)?.name ?? null) : null,
    };
    top.clones.push(clone);
  }
}

export async function readIndexes(client: pg.Client, out: TablesRead, oids: number[]) {
  const { rows } = await client.query<{
    oid: number;
    rel: number;
    schema: string;
    name: string;
    definition: string;
    clustered: boolean;
    replident: boolean;
    valid: boolean;
    partitioned: boolean;
    parent: number;
    backs_constraint: boolean;
    columns: number[];
    expr_columns: number[];
    procs: number[];
    types: number[];
    comment: string | null;
  }>(
    `SELECT i.indexrelid::int AS oid, i.indrelid::int AS rel, n.nspname AS schema, ic.relname AS name,
            pg_get_indexdef(i.indexrelid) AS definition, i.indisclustered AS clustered, i.indisreplident AS replident,
            i.indisvalid AS valid, ic.relkind = 'I' AS partitioned,
            coalesce((SELECT inh.inhparent::int FROM pg_inherits inh WHERE inh.inhrelid = i.indexrelid), 0) AS parent,
            EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid AND c.conrelid = i.indrelid
                     AND c.contype IN ('p', 'u', 'x')) AS backs_constraint,
            (i.indkey::int2[])::int[] AS columns,
            ${columnDeps('pg_class', 'i.indexrelid', 'i.indrelid')} AS expr_columns,
            ${procDeps('pg_class', 'i.indexrelid')} AS procs,
            ${typeDeps('pg_class', 'i.indexrelid')} AS types,
            obj_description(i.indexrelid, 'pg_class') AS comment
       FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_namespace n ON n.oid = ic.relnamespace
      WHERE i.indrelid = ANY($1::oid[])
      ORDER BY n.nspname, ic.relname`,
    [oids],
  );
  const byOid = new Map(rows.map((r) => [r.oid, r]));
  const attachable = (r: (typeof rows)[number]) => {
    const p = byOid.get(r.parent);
    return p !== undefined && !p.backs_constraint;
  };
  const toDef = (r: (typeof rows)[number]): IndexDef => ({
    name: { schema: r.schema, name: r.name },
    table: out.tables.get(r.rel)!.name,
    definition: r.definition,
    children: [],
    clustered: r.clustered,
    replicaIdentity: r.replident,
    comment: r.comment,
  });
  for (const r of rows) {
    if (r.backs_constraint) {
      if (r.clustered || r.replident) out.constraintIndexSettings.push({ ...toDef(r), comment: null });
      continue;
    }
    if (attachable(r)) continue;
    const t = out.tables.get(r.rel)!;
    const subject = `index ${displayName({ schema: r.schema, name: r.name })}`;
    const refs = [...r.columns, ...r.expr_columns].filter((n) => t.omitted.has(n));
    if (refs.length > 0) {
      out.skipped.push({
        phase: 'postData',
        subject,
        reason: `references omitted column ${[...new Set(refs)].map((n) => t.columns.get(n)).join(', ')}`,
      });
      continue;
    }
    if (!r.valid && !r.partitioned) {
      out.skipped.push({ phase: 'postData', subject, reason: 'invalid on the source (a failed CREATE INDEX CONCURRENTLY?)' });
      continue;
    }
    const def = toDef(r);
    // Indexes of partitions attached to this one, deepest first.
    const walk = (parent: number, depth: number): Array<{ r: (typeof rows)[number]; depth: number }> =>
      rows.filter((c) => c.parent === parent && attachable(c)).flatMap((c) => [{ r: c, depth }, ...walk(c.oid, depth + 1)]);
    def.children = walk(r.oid, 1)
      .sort((a, b) => b.depth - a.depth)
      .map(({ r: c }) => {
        const p = byOid.get(c.parent)!;
        return {
          name: { schema: c.schema, name: c.name },
          table: out.tables.get(c.rel)!.name,
          definition: c.definition,
          parent: { schema: p.schema, name: p.name },
        };
      });
    for (const x of [r, ...rows.filter((c) => attachable(c) && c.parent === r.oid)]) {
      for (const p of x.procs) out.earlyProcs.add(p);
      for (const ty of x.types) out.typeSeeds.add(ty);
    }
    out.indexes.push(def);
  }
}

export async function readStatistics(client: pg.Client, out: TablesRead, oids: number[]) {
  const { rows } = await client.query<{
    rel: number;
    schema: string;
    name: string;
    definition: string;
    columns: number[];
    expr_columns: number[];
  }>(
    `SELECT s.stxrelid::int AS rel, n.nspname AS schema, s.stxname AS name, pg_get_statisticsobjdef(s.oid) AS definition,
            (s.stxkeys::int2[])::int[] AS columns, ${columnDeps('pg_statistic_ext', 's.oid', 's.stxrelid')} AS expr_columns
       FROM pg_statistic_ext s JOIN pg_namespace n ON n.oid = s.stxnamespace
      WHERE s.stxrelid = ANY($1::oid[])
      ORDER BY n.nspname, s.stxname`,
    [oids],
  );
  for (const r of rows) {
    const t = out.tables.get(r.rel)!;
    const name = { schema: r.schema, name: r.name };
    const refs = [...r.columns, ...r.expr_columns].filter((n) => t.omitted.has(n));
    if (refs.length > 0) {
      out.skipped.push({
        phase: 'postData',
        subject: `statistics ${displayName(name)}`,
        reason: `references omitted column ${[...new Set(refs)].map((n) => t.columns.get(n)).join(', ')}`,
      });
      continue;
    }
    out.statistics.push({ name, table: t.name, definition: r.definition });
  }
}
