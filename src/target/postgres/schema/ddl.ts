/**
 * Pure SQL text for the target, built from the source schema model. Invariants:
 * - every identifier goes through quoteIdent()/quoteQualified(), every literal through
 *   quoteLiteral(); the only SQL taken as is are fragments the source's pg_get_* functions
 *   printed (types, expressions, definitions), which are already qualified and quoted;
 * - nothing here talks to a server: the same text is shown by describeSchema() and run by apply.
 */
import { quoteIdent, quoteLiteral, quoteQualified, type QualifiedName } from '../../../plan/names.js';
import type {
  ColumnDef,
  ConstraintDef,
  ExtensionDef,
  FunctionDef,
  IndexDef,
  PolicyDef,
  SequenceDef,
  SequenceOptions,
  TableDef,
  TriggerDef,
  TypeDef,
  ViewDef,
} from './model.js';

const q = quoteIdent;
const qq = quoteQualified;

export function createSchema(name: string): string {
  return `CREATE SCHEMA ${q(name)}`;
}

export function createExtension(e: ExtensionDef): string {
  return `CREATE EXTENSION IF NOT EXISTS ${q(e.name)} WITH SCHEMA ${q(e.schema)}`;
}

/** `key=value` entries of a reloptions array as `key = 'value'` (keys may carry a `toast.` prefix). */
export function withOptions(options: string[], prefix = ''): string[] {
  return options.map((o) => {
    const eq = o.indexOf('=');
    const key = eq < 0 ? o : o.slice(0, eq);
    const value = eq < 0 ? 'true' : o.slice(eq + 1);
    const k = /^[a-z_][a-z0-9_]*$/.test(key) ? key : q(key);
    return `${prefix}${k} = ${quoteLiteral(value)}`;
  });
}

function comment(kind: string, target: string, text: string | null): string[] {
  return text === null ? [] : [`COMMENT ON ${kind} ${target} IS ${quoteLiteral(text)}`];
}

export function sequenceOptions(o: SequenceOptions, withType: boolean): string {
  return [
    ...(withType ? [`AS ${o.dataType}`] : []),
    `INCREMENT BY ${o.increment}`,
    `MINVALUE ${o.min}`,
    `MAXVALUE ${o.max}`,
    `START WITH ${o.start}`,
    `CACHE ${o.cache}`,
    o.cycle ? 'CYCLE' : 'NO CYCLE',
  ].join(' ');
}

/** CREATE TYPE / CREATE DOMAIN, NOT VALID domain constraints and comments. */
export function createType(t: TypeDef): string[] {
  const name = qq(t.name);
  switch (t.kind) {
    case 'enum':
      return [`CREATE TYPE ${name} AS ENUM (${t.labels.map(quoteLiteral).join(', ')})`, ...comment('TYPE', name, t.comment)];
    case 'composite': {
      const attrs = t.attributes.map((a) => `${q(a.name)} ${a.type}${a.collation ? ` COLLATE ${a.collation}` : ''}`);
      return [`CREATE TYPE ${name} AS (${attrs.join(', ')})`, ...comment('TYPE', name, t.comment)];
    }
    case 'range': {
      const opts = [`SUBTYPE = ${t.subtype}`, `SUBTYPE_OPCLASS = ${t.opclass}`];
      if (t.collation) opts.push(`COLLATION = ${t.collation}`);
      if (t.canonical) opts.push(`CANONICAL = ${t.canonical}`);
      if (t.subtypeDiff) opts.push(`SUBTYPE_DIFF = ${t.subtypeDiff}`);
      if (t.multirange) opts.push(`MULTIRANGE_TYPE_NAME = ${qq(t.multirange)}`);
      return [`CREATE TYPE ${name} AS RANGE (${opts.join(', ')})`, ...comment('TYPE', name, t.comment)];
    }
    case 'domain': {
      let sql = `CREATE DOMAIN ${name} AS ${t.baseType}`;
      if (t.collation) sql += ` COLLATE ${t.collation}`;
      if (t.default !== null) sql += ` DEFAULT ${t.default}`;
      if (t.notNull) sql += ' NOT NULL';
      // NOT VALID constraints come after the data (laterCheck): new values, the copied ones too, must pass them.
      for (const c of t.constraints.filter((c) => c.validated)) sql += ` CONSTRAINT ${q(c.name)} ${c.definition}`;
      return [
        sql,
        ...comment('DOMAIN', name, t.comment),
        ...t.constraints.filter((c) => c.validated).flatMap((c) => comment('CONSTRAINT', `${q(c.name)} ON DOMAIN ${name}`, c.comment)),
      ];
    }
  }
}

export function createSequence(s: SequenceDef): string[] {
  return [
    `CREATE ${s.unlogged ? 'UNLOGGED ' : ''}SEQUENCE ${qq(s.name)} ${sequenceOptions(s, true)}`,
    ...comment('SEQUENCE', qq(s.name), s.comment),
  ];
}

export function sequenceOwnedBy(s: SequenceDef): string | null {
  return s.ownedBy ? `ALTER SEQUENCE ${qq(s.name)} OWNED BY ${qq(s.ownedBy.table)}.${q(s.ownedBy.column)}` : null;
}

export function columnDefinition(c: ColumnDef): string {
  let sql = `${q(c.name)} ${c.type}`;
  if (c.collation) sql += ` COLLATE ${c.collation}`;
  if (c.generated !== null) sql += ` GENERATED ALWAYS AS (${c.generated}) STORED`;
  else if (c.identity) {
    const seq = c.identity.options;
    sql += ` GENERATED ${c.identity.kind === 'always' ? 'ALWAYS' : 'BY DEFAULT'} AS IDENTITY (SEQUENCE NAME ${qq(c.identity.sequence)} ${sequenceOptions(seq, seq.dataType !== c.type)})`;
  } else if (c.default !== null) sql += ` DEFAULT ${c.default}`;
  if (c.notNull) sql += ' NOT NULL';
  return sql;
}

/** Per-column settings that CREATE TABLE cannot say: statistics, storage, compression, options. */
function columnSettings(table: string, c: ColumnDef): string[] {
  const col = `ALTER TABLE ${table} ALTER COLUMN ${q(c.name)}`;
  const out: string[] = [];
  if (c.statistics !== null) out.push(`${col} SET STATISTICS ${c.statistics}`);
  const storage: Record<string, string> = { p: 'PLAIN', e: 'EXTERNAL', m: 'MAIN', x: 'EXTENDED' };
  if (c.storage && storage[c.storage]) out.push(`${col} SET STORAGE ${storage[c.storage]}`);
  const compression: Record<string, string> = { p: 'pglz', l: 'lz4' };
  if (c.compression && compression[c.compression]) out.push(`${col} SET COMPRESSION ${compression[c.compression]}`);
  if (c.options.length > 0) out.push(`${col} SET (${withOptions(c.options).join(', ')})`);
  return out;
}

/**
 * CREATE TABLE (columns, CHECK constraints, PRIMARY KEY; or PARTITION OF), then what differs on a
 * partition from its parent, NOT VALID checks, column settings, replica identity and comments.
 */
export function createTable(t: TableDef, parent: TableDef | undefined): string[] {
  const name = qq(t.name);
  const inline = t.constraints.filter((c) => c.validated);
  const options = [...withOptions(t.reloptions), ...withOptions(t.toastOptions, 'toast.')];
  const tail =
    (t.partitionKey ? ` PARTITION BY ${t.partitionKey}` : '') +
    (t.accessMethod ? ` USING ${q(t.accessMethod)}` : '') +
    (options.length > 0 ? ` WITH (${options.join(', ')})` : '');
  const persistence = t.unlogged ? 'UNLOGGED ' : '';
  const out: string[] = [];
  if (t.partitionOf && parent) {
    out.push(`CREATE ${persistence}TABLE ${name} PARTITION OF ${qq(t.partitionOf.parent)} ${t.partitionOf.bound}${tail}`);
    // A partition takes its parent's columns, defaults and NOT NULLs; put back what differs.
    for (const c of t.columns) {
      const p = parent.columns.find((x) => x.name === c.name);
      if (!p || c.generated !== null || c.identity) continue;
      const col = `ALTER TABLE ${name} ALTER COLUMN ${q(c.name)}`;
      if (c.default !== p.default) out.push(c.default === null ? `${col} DROP DEFAULT` : `${col} SET DEFAULT ${c.default}`);
      if (c.notNull && !p.notNull) out.push(`${col} SET NOT NULL`);
    }
    for (const c of inline) out.push(`ALTER TABLE ${name} ADD CONSTRAINT ${q(c.name)} ${c.definition}`);
  } else {
    const items = [
      ...t.columns.map(columnDefinition),
      ...t.addColumns.map((a) => `${q(a.name)} ${a.type}`),
      ...inline.map((c) => `CONSTRAINT ${q(c.name)} ${c.definition}`),
    ];
    out.push(`CREATE ${persistence}TABLE ${name} (${items.length > 0 ? `\n  ${items.join(',\n  ')}\n` : ''})${tail}`);
  }
  for (const c of t.columns) out.push(...columnSettings(name, c));
  if (t.replicaIdentity === 'f') out.push(`ALTER TABLE ${name} REPLICA IDENTITY FULL`);
  if (t.replicaIdentity === 'n') out.push(`ALTER TABLE ${name} REPLICA IDENTITY NOTHING`);
  out.push(...comment('TABLE', name, t.comment));
  for (const c of t.columns) out.push(...comment('COLUMN', `${name}.${q(c.name)}`, c.comment));
  for (const c of t.constraints.filter((c) => c.validated)) out.push(...constraintComment(c));
  return out;
}

/**
 * A NOT VALID check constraint (of a table, or of a domain), added after the data: NOT VALID spares
 * the rows already there, not new ones, and the copied rows are new on the target (the source's
 * old rows that break it would stop the copy).
 */
export function laterCheck(
  on: { table: QualifiedName } | { domain: QualifiedName },
  c: { name: string; definition: string; comment: string | null },
): string[] {
  if ('table' in on)
    return [
      `ALTER TABLE ${qq(on.table)} ADD CONSTRAINT ${q(c.name)} ${c.definition}`,
      ...comment('CONSTRAINT', `${q(c.name)} ON ${qq(on.table)}`, c.comment),
    ];
  return [
    `ALTER DOMAIN ${qq(on.domain)} ADD CONSTRAINT ${q(c.name)} ${c.definition}`,
    ...comment('CONSTRAINT', `${q(c.name)} ON DOMAIN ${qq(on.domain)}`, c.comment),
  ];
}

export function constraintComment(c: ConstraintDef): string[] {
  return comment('CONSTRAINT', `${q(c.name)} ON ${qq(c.table)}`, c.comment);
}

/**
 * Whether a foreign key is added NOT VALID and then validated (a shorter lock while it is checked).
 * Not on a partitioned table (refused before PostgreSQL 18), nor when it references one: there,
 * VALIDATE leaves the copies for the referenced partitions NOT VALID (seen on 17).
 */
export function validatesLater(c: ConstraintDef): boolean {
  return c.type === 'f' && c.validated && !c.onPartitioned && c.clones.length === 0;
}

/** ADD CONSTRAINT; a foreign key that can be is added NOT VALID (validated by validateConstraint). */
export function addConstraint(c: ConstraintDef): string {
  const notValid = validatesLater(c) ? ' NOT VALID' : '';
  return `ALTER TABLE ${qq(c.table)} ADD CONSTRAINT ${q(c.name)} ${c.definition}${notValid}`;
}

export function validateConstraint(c: ConstraintDef): string {
  return `ALTER TABLE ${qq(c.table)} VALIDATE CONSTRAINT ${q(c.name)}`;
}

export function attachIndex(parent: QualifiedName, child: QualifiedName): string {
  return `ALTER INDEX ${qq(parent)} ATTACH PARTITION ${qq(child)}`;
}

export function indexExtras(i: IndexDef): string[] {
  const table = qq(i.table);
  return [
    ...(i.clustered ? [`ALTER TABLE ${table} CLUSTER ON ${q(i.name.name)}`] : []),
    ...(i.replicaIdentity ? [replicaIdentityIndex(i.table, i.name.name)] : []),
    ...comment('INDEX', qq(i.name), i.comment),
  ];
}

export function replicaIdentityIndex(table: QualifiedName, index: string): string {
  return `ALTER TABLE ${qq(table)} REPLICA IDENTITY USING INDEX ${q(index)}`;
}

export function createFunction(f: FunctionDef): string[] {
  const kind = f.kind === 'procedure' ? 'PROCEDURE' : 'FUNCTION';
  return [f.definition, ...comment(kind, `${qq(f.name)}(${f.identityArgs})`, f.comment)];
}

export function createView(v: ViewDef): string[] {
  const name = qq(v.name);
  const body = v.definition.trim().replace(/;$/, '');
  const options = v.options.length > 0 ? ` WITH (${withOptions(v.options).join(', ')})` : '';
  if (v.materialized) {
    return [
      `CREATE MATERIALIZED VIEW ${name}${options} AS\n${body}\nWITH DATA`,
      ...v.indexes.map((i) => i.definition),
      ...comment('MATERIALIZED VIEW', name, v.comment),
    ];
  }
  return [`CREATE VIEW ${name}${options} AS\n${body}`, ...comment('VIEW', name, v.comment)];
}

export function createTrigger(t: TriggerDef): string[] {
  const table = qq(t.table);
  const state: Record<string, string> = { D: 'DISABLE', R: 'ENABLE REPLICA', A: 'ENABLE ALWAYS' };
  return [
    t.definition,
    ...(state[t.enabled] ? [`ALTER TABLE ${table} ${state[t.enabled]} TRIGGER ${q(t.name)}`] : []),
    ...comment('TRIGGER', `${q(t.name)} ON ${table}`, t.comment),
  ];
}

export function rowSecurity(t: TableDef): string[] {
  return [
    ...(t.rowSecurity ? [`ALTER TABLE ${qq(t.name)} ENABLE ROW LEVEL SECURITY`] : []),
    ...(t.forceRowSecurity ? [`ALTER TABLE ${qq(t.name)} FORCE ROW LEVEL SECURITY`] : []),
  ];
}

export function createPolicy(p: PolicyDef): string {
  let sql = `CREATE POLICY ${q(p.name)} ON ${qq(p.table)} AS ${p.permissive ? 'PERMISSIVE' : 'RESTRICTIVE'} FOR ${p.command} TO PUBLIC`;
  if (p.using !== null) sql += ` USING (${p.using})`;
  if (p.withCheck !== null) sql += ` WITH CHECK (${p.withCheck})`;
  return sql;
}
