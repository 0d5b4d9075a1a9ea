/**
 * The target schema, replayed from the source catalogs in three phases around the data copy:
 *   1. applyPreData  before any data: extensions, schemas, types, sequences, tables (columns,
 *      defaults, identity, generated columns, CHECK, PRIMARY KEY, partitions), sequence ownership;
 *   2. applyPostData after the data, in parallel: indexes, UNIQUE / EXCLUDE, foreign keys
 *      (NOT VALID, then VALIDATE), extended statistics;
 *   3. applyFinal    views, functions, triggers, row level security.
 * Invariants:
 * - the source is read once (readSourceSchema) into a JSON-serialisable SourceSchema; the phases
 *   and describeSchema() derive their statements from it alone, so what is shown is what runs;
 * - every phase is idempotent: each step is one transaction on the target and is skipped when its
 *   object exists (or is harmless to repeat), so a phase may be re-run after a crash or success;
 * - ownership and grants are never copied (the target's roles differ).
 */
import type pg from 'pg';
import { PreconditionError } from '../../../errors.js';
import { displayName, quoteQualified, type QualifiedName } from '../../../plan/names.js';
import type { Plan } from '../../../plan/defaults.js';
import { serverVersion } from '../../../pg/connect.js';
import { withCatalogSession } from './catalog.js';
import { runStages, runStep, runSteps } from './execute.js';
import type { Phase, Skipped, SourceSchema, TableSelection } from './model.js';
import { readObjects } from './readObjects.js';
import { readTables } from './readTables.js';
import { finalSteps, listedSequenceSteps, partitionSteps, postDataStages, preDataSteps, renderStep } from './steps.js';

export type { SourceSchema, TableSelection, Skipped, TableDef, ColumnDef } from './model.js';
export { SchemaApplyError } from './execute.js';

/** Oldest source we read: generated columns and pg_partition_tree() arrived in PostgreSQL 12. */
export const MIN_SCHEMA_VERSION = 120000;

/**
 * The tables whose schema a plan replays, as readSourceSchema takes them: a documents table
 * without its content column and with its kept column (text); each table once.
 */
export function planSelections(plan: Pick<Plan, 'tables' | 'documents'>): TableSelection[] {
  const documents = new Map(plan.documents.map((d) => [displayName(d.table), d]));
  const plain = plan.tables.filter((t) => !documents.has(displayName(t.name)));
  return [
    ...[...documents.values()].map((d) => ({
      name: d.table,
      omitColumns: [d.content],
      addColumns: [{ name: d.keepColumn, type: 'text' }],
    })),
    ...plain.map((t) => ({ name: t.name, omitColumns: [], addColumns: [] })),
  ];
}

/** How many skipped objects are named one by one; the rest are counted. */
const SKIPPED_NAMED = 20;

/** The objects the replay leaves out, one line each (the first SKIPPED_NAMED, then a count). */
export function skippedLines(skipped: Skipped[]): string[] {
  const lines = skipped.slice(0, SKIPPED_NAMED).map((x) => `${oneLine(x.subject)} is not replayed on the target: ${oneLine(x.reason)}`);
  if (skipped.length > SKIPPED_NAMED) lines.push(`and ${skipped.length - SKIPPED_NAMED} more objects not replayed on the target`);
  return lines;
}

export async function readSourceSchema(
  source: pg.Client,
  tables: TableSelection[],
  /** The plan's `sequences`, beyond those the tables own or use. */
  sequences: QualifiedName[] = [],
): Promise<SourceSchema> {
  return withCatalogSession(source, async () => {
    const version = await serverVersion(source);
    if (version < MIN_SCHEMA_VERSION)
      throw new PreconditionError(`the source runs PostgreSQL ${Math.floor(version / 10000)}; reading its schema needs 12 or newer`);
    const t = await readTables(source, version, tables, sequences);
    const o = await readObjects(source, version, t);
    const ctxs = [...t.tables.values()];
    const schema: SourceSchema = {
      format: 1,
      sourceVersion: version,
      selections: tables.map((s) => ({
        name: { ...s.name },
        omitColumns: [...s.omitColumns],
        addColumns: s.addColumns.map((a) => ({ ...a })),
      })),
      schemas: [],
      extensions: o.extensions,
      preDataObjects: o.preDataObjects,
      sequences: [...t.sequences.values()],
      tables: ctxs.map((c) => c.def),
      indexes: t.indexes,
      constraints: t.constraints,
      statistics: t.statistics,
      constraintIndexSettings: t.constraintIndexSettings,
      functions: o.functions,
      views: o.views,
      triggers: o.triggers,
      policies: o.policies,
      skipped: [...t.skipped, ...o.skipped],
    };
    schema.schemas = schemasOf(schema);
    return schema;
  });
}

function schemasOf(s: SourceSchema): string[] {
  const names: QualifiedName[] = [
    ...s.tables.map((t) => t.name),
    ...s.tables.flatMap((t) => t.columns.flatMap((c) => (c.identity ? [c.identity.sequence] : []))),
    ...s.sequences.map((x) => x.name),
    ...s.preDataObjects.map((o) => ('type' in o ? o.type.name : o.function.name)),
    ...s.functions.map((f) => f.name),
    ...s.views.map((v) => v.name),
    ...s.statistics.map((x) => x.name),
  ];
  return [...new Set([...names.map((n) => n.schema), ...s.extensions.map((e) => e.schema)])].sort();
}

/** Phase 1, before any data. One transaction per object; objects that exist are skipped. */
export async function applyPreData(target: pg.Client, schema: SourceSchema): Promise<void> {
  await runSteps(target, preDataSteps(schema));
}

/**
 * The migrated tables' partitions created where missing: one made on the source since phase 1
 * (a monthly partition, say) would refuse its rows on the target (23514). Returns those created.
 */
export async function applyNewPartitions(target: pg.Client, schema: SourceSchema): Promise<string[]> {
  const created: string[] = [];
  for (const step of partitionSteps(schema)) if (await runStep(target, step)) created.push(step.label.replace(/^partition /, ''));
  return created;
}

/** The plan's `sequences` created where missing (a run resumed past phase 1 with one more listed). */
export async function applyListedSequences(target: pg.Client, schema: SourceSchema, listed: readonly QualifiedName[]): Promise<void> {
  await runSteps(target, listedSequenceSteps(schema, listed));
}

/**
 * Phase 2, after the data, over min(jobs, work) connections opened with `connect` (and closed
 * here). Stages: keys of partitioned tables; other keys, indexes and statistics; foreign keys.
 */
export async function applyPostData(connect: () => Promise<pg.Client>, schema: SourceSchema, options: { jobs: number }): Promise<void> {
  await runStages(connect, postDataStages(schema), options.jobs);
}

/** Phase 3: functions, views (in dependency order), triggers, row level security and policies. */
export async function applyFinal(target: pg.Client, schema: SourceSchema): Promise<void> {
  await runSteps(target, finalSteps(schema));
}

const oneLine = (text: string) => text.replace(/[\r\n]+/g, ' ');

/** Names and SQL of what each phase would run (and what it leaves out, as comment lines). */
export function describeSchema(schema: SourceSchema): { preData: string[]; postData: string[]; final: string[] } {
  const skipped = (phase: Phase) =>
    schema.skipped.filter((x) => x.phase === phase).map((x) => `-- skipped: ${oneLine(x.subject)}: ${oneLine(x.reason)}`);
  return {
    preData: [...skipped('preData'), ...preDataSteps(schema).map(renderStep)],
    postData: [...skipped('postData'), ...postDataStages(schema).flat(2).map(renderStep)],
    final: [...skipped('final'), ...finalSteps(schema).map(renderStep)],
  };
}

/** The target columns the copy writes, in order: kept, non-generated source columns (not addColumns). */
export function copyColumns(schema: SourceSchema, table: QualifiedName): string[] {
  const t = schema.tables.find((x) => quoteQualified(x.name) === quoteQualified(table));
  if (!t) throw new PreconditionError(`table ${displayName(table)} is not in the migrated schema`);
  return t.columns.filter((c) => c.generated === null).map((c) => c.name);
}
