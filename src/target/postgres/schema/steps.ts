/**
 * The three phases as lists of steps, built from the source schema alone (no server). Invariants:
 * - a step is one transaction on the target: its statements all happen or none does;
 * - a step with a probe is skipped when the object the probe names already exists, and every
 *   step without one is safe to repeat (OWNED BY, ATTACH, VALIDATE, settings, renames), so each
 *   phase can run again after a crash or a finished run;
 * - within a phase, steps run in list order; in phase 2, the units of one stage run in parallel
 *   (one unit = steps that must stay in order, e.g. a partitioned index and its partitions'),
 *   and stages run one after the other (keys before the foreign keys that need them).
 */
import type pg from 'pg';
import { displayName, quoteIdent, quoteQualified, type QualifiedName } from '../../../plan/names.js';
import { describeCloneRenames, renameClones } from './clones.js';
import * as ddl from './ddl.js';
import type { ConstraintDef, IndexDef, SourceSchema, TableDef } from './model.js';

export type ProbeKind =
  | 'schema'
  | 'extension'
  | 'type'
  | 'relation'
  | 'function'
  | 'constraint'
  | 'domainConstraint'
  | 'trigger'
  | 'policy'
  | 'statistics'
  | 'rowSecurity';

export interface Probe {
  kind: ProbeKind;
  /** schema/extension: [name]; type/relation/statistics: [schema, name]; function: [schema, name, identity args];
   * constraint/trigger/policy: [table schema, table name, name]; domainConstraint: [domain schema, domain name, name];
   * rowSecurity: [schema, table, forced]. */
  args: string[];
}

export interface Step {
  /** What the step creates, e.g. "table public.patients". */
  label: string;
  probe: Probe | null;
  sql: string[];
  /** Work that reads the target's catalog (renaming partition copies), after sql, same transaction. */
  dynamic?: { describe: string; run: (client: pg.Client) => Promise<void> };
}

/** Phase 2: stages in order; each stage a list of units that may run in parallel. */
export type Stages = Step[][][];

const qn = (q: QualifiedName): string[] => [q.schema, q.name];
const on = (table: QualifiedName, name: string): string[] => [table.schema, table.name, name];

const schemaStep = (name: string): Step => ({
  label: `schema ${quoteIdent(name)}`,
  probe: { kind: 'schema', args: [name] },
  sql: [ddl.createSchema(name)],
});

const sequenceStep = (q: SourceSchema['sequences'][number]): Step => ({
  label: `sequence ${displayName(q.name)}`,
  probe: { kind: 'relation', args: qn(q.name) },
  sql: ddl.createSequence(q),
});

/**
 * The plan's own `sequences` (with their schemas), for a run resumed past its schema phase with
 * a plan that lists one more: each step is skipped where its object exists.
 */
export function listedSequenceSteps(s: SourceSchema, listed: readonly QualifiedName[]): Step[] {
  const names = new Set(listed.map(quoteQualified));
  const sequences = s.sequences.filter((q) => names.has(quoteQualified(q.name)));
  return [...new Set(sequences.map((q) => q.name.schema))].map(schemaStep).concat(sequences.map(sequenceStep));
}

/** Each table (or partition: after its parent, in the schema's order) created where missing. */
function tableSteps(s: SourceSchema, tables: TableDef[]): Step[] {
  const byName = new Map(s.tables.map((t) => [quoteQualified(t.name), t]));
  return tables.map((t) => ({
    label: `${t.partitionOf ? 'partition' : 'table'} ${displayName(t.name)}`,
    probe: { kind: 'relation', args: qn(t.name) },
    sql: ddl.createTable(t, t.partitionOf ? byName.get(quoteQualified(t.partitionOf.parent)) : undefined),
  }));
}

/** The migrated tables' partitions, created where missing: one made on the source after phase 1. */
export function partitionSteps(s: SourceSchema): Step[] {
  return tableSteps(
    s,
    s.tables.filter((t) => t.partitionOf !== null),
  );
}

export function preDataSteps(s: SourceSchema): Step[] {
  const steps: Step[] = [];
  for (const name of s.schemas) steps.push(schemaStep(name));
  for (const e of s.extensions)
    steps.push({ label: `extension ${e.name}`, probe: { kind: 'extension', args: [e.name] }, sql: [ddl.createExtension(e)] });
  for (const o of s.preDataObjects) {
    if ('type' in o) {
      steps.push({
        label: `type ${displayName(o.type.name)}`,
        probe: { kind: 'type', args: qn(o.type.name) },
        sql: ddl.createType(o.type),
      });
    } else {
      const f = o.function;
      steps.push({
        label: `${f.kind} ${displayName(f.name)}(${f.identityArgs})`,
        probe: { kind: 'function', args: [...qn(f.name), f.identityArgs] },
        sql: ddl.createFunction(f),
      });
    }
  }
  for (const q of s.sequences) steps.push(sequenceStep(q));
  steps.push(...tableSteps(s, s.tables));
  const owned = s.sequences.map(ddl.sequenceOwnedBy).filter((x): x is string => x !== null);
  if (owned.length > 0) steps.push({ label: 'sequence ownership', probe: null, sql: owned });
  for (const t of s.tables) for (const c of t.constraints) if (c.clones.length > 0) steps.push(cloneStep(c));
  return steps;
}

function cloneStep(c: ConstraintDef): Step {
  return {
    label: `partition copies of ${c.name} on ${displayName(c.table)}`,
    probe: null,
    sql: [],
    dynamic: { describe: describeCloneRenames(c), run: (client) => renameClones(client, c) },
  };
}

function constraintUnit(c: ConstraintDef): Step[] {
  const steps: Step[] = [
    {
      label: `${c.type === 'f' ? 'foreign key' : c.type === 'u' ? 'unique constraint' : 'exclusion constraint'} ${c.name} on ${displayName(c.table)}`,
      probe: { kind: 'constraint', args: on(c.table, c.name) },
      sql: [ddl.addConstraint(c), ...ddl.constraintComment(c)],
    },
  ];
  if (ddl.validatesLater(c))
    steps.push({ label: `validate ${c.name} on ${displayName(c.table)}`, probe: null, sql: [ddl.validateConstraint(c)] });
  if (c.clones.length > 0) steps.push(cloneStep(c));
  return steps;
}

function indexUnit(i: IndexDef): Step[] {
  const steps: Step[] = i.children.map((c) => ({
    label: `index ${displayName(c.name)}`,
    probe: { kind: 'relation', args: qn(c.name) },
    sql: [c.definition],
  }));
  steps.push({ label: `index ${displayName(i.name)}`, probe: { kind: 'relation', args: qn(i.name) }, sql: [i.definition] });
  if (i.children.length > 0)
    steps.push({
      label: `attach the partitions' indexes to ${displayName(i.name)}`,
      probe: null,
      sql: i.children.map((c) => ddl.attachIndex(c.parent, c.name)),
    });
  const extras = ddl.indexExtras(i);
  if (extras.length > 0) steps.push({ label: `settings of index ${displayName(i.name)}`, probe: null, sql: extras });
  return steps;
}

export function postDataStages(s: SourceSchema): Stages {
  const size = new Map(s.tables.map((t) => [quoteQualified(t.name), t.bytes]));
  const bytes = (q: QualifiedName) => size.get(quoteQualified(q)) ?? 0;
  const largestFirst = <T>(items: T[], table: (x: T) => QualifiedName) => [...items].sort((a, b) => bytes(table(b)) - bytes(table(a)));

  const keys = s.constraints.filter((c) => c.type !== 'f');
  // Keys on partitioned tables first: added later, they could adopt a partition's matching index.
  const partitionedKeys = largestFirst(
    keys.filter((c) => c.onPartitioned),
    (c) => c.table,
  ).map(constraintUnit);
  const second = [
    ...largestFirst(
      keys.filter((c) => !c.onPartitioned),
      (c) => c.table,
    ).map((c) => ({ table: c.table, unit: constraintUnit(c) })),
    ...s.indexes.map((i) => ({ table: i.table, unit: indexUnit(i) })),
    ...s.statistics.map((x) => ({
      table: x.table,
      unit: [{ label: `statistics ${displayName(x.name)}`, probe: { kind: 'statistics' as const, args: qn(x.name) }, sql: [x.definition] }],
    })),
  ];
  const third = [
    ...largestFirst(
      s.constraints.filter((c) => c.type === 'f'),
      (c) => c.table,
    ).map(constraintUnit),
    ...constraintIndexSettings(s),
    ...laterChecks(s),
  ];
  return [partitionedKeys, largestFirst(second, (x) => x.table).map((x) => x.unit), third].filter((stage) => stage.length > 0);
}

/** NOT VALID check constraints of tables and domains, after the data (see ddl.laterCheck). */
function laterChecks(s: SourceSchema): Step[][] {
  const tables = s.tables.flatMap((t) =>
    t.constraints
      .filter((c) => !c.validated)
      .map((c): Step[] => [
        {
          label: `check ${c.name} on ${displayName(t.name)} (NOT VALID)`,
          probe: { kind: 'constraint', args: on(t.name, c.name) },
          sql: ddl.laterCheck({ table: t.name }, c),
        },
      ]),
  );
  const domains = s.preDataObjects.flatMap((o) =>
    'type' in o && o.type.kind === 'domain'
      ? o.type.constraints
          .filter((c) => !c.validated)
          .map((c): Step[] => [
            {
              label: `check ${c.name} on domain ${displayName(o.type.name)} (NOT VALID)`,
              probe: { kind: 'domainConstraint', args: [...qn(o.type.name), c.name] },
              sql: ddl.laterCheck({ domain: o.type.name }, c),
            },
          ])
      : [],
  );
  return [...tables, ...domains];
}

function constraintIndexSettings(s: SourceSchema): Step[][] {
  return s.tables.flatMap((t: TableDef) => {
    const sql = indexSettingsOf(s, t);
    return sql.length > 0 ? [[{ label: `index settings of ${displayName(t.name)}`, probe: null, sql }]] : [];
  });
}

/** CLUSTER ON / REPLICA IDENTITY USING INDEX for the indexes of PRIMARY KEY / UNIQUE constraints. */
function indexSettingsOf(s: SourceSchema, t: TableDef): string[] {
  return s.constraintIndexSettings
    .filter((i) => i.table.schema === t.name.schema && i.table.name === t.name.name)
    .flatMap((i) => ddl.indexExtras(i));
}

export function finalSteps(s: SourceSchema): Step[] {
  const steps: Step[] = [];
  for (const f of s.functions)
    steps.push({
      label: `${f.kind} ${displayName(f.name)}(${f.identityArgs})`,
      probe: { kind: 'function', args: [...qn(f.name), f.identityArgs] },
      sql: ddl.createFunction(f),
    });
  for (const v of s.views)
    steps.push({
      label: `${v.materialized ? 'materialized view' : 'view'} ${displayName(v.name)}`,
      probe: { kind: 'relation', args: qn(v.name) },
      sql: ddl.createView(v),
    });
  for (const t of s.triggers)
    steps.push({
      label: `trigger ${t.name} on ${displayName(t.table)}`,
      probe: { kind: 'trigger', args: on(t.table, t.name) },
      sql: ddl.createTrigger(t),
    });
  for (const t of s.tables) {
    const sql = ddl.rowSecurity(t);
    if (sql.length > 0)
      steps.push({
        label: `row level security on ${displayName(t.name)}`,
        probe: { kind: 'rowSecurity', args: [...qn(t.name), String(t.forceRowSecurity)] },
        sql,
      });
  }
  for (const p of s.policies)
    steps.push({
      label: `policy ${p.name} on ${displayName(p.table)}`,
      probe: { kind: 'policy', args: on(p.table, p.name) },
      sql: [ddl.createPolicy(p)],
    });
  return steps;
}

/** A step as text: a comment naming it (and its probe), its statements, a comment for dynamic work. */
export function renderStep(step: Step): string {
  const head = `-- ${step.label.replace(/[\r\n]+/g, ' ')}${step.probe ? ' (skipped if it exists)' : ''}`;
  const body = step.sql.map((x) => `${x};`);
  const dynamic = step.dynamic ? [`-- then: ${step.dynamic.describe.replace(/[\r\n]+/g, ' ')}`] : [];
  return [head, ...body, ...dynamic].join('\n');
}
