/**
 * Defaults, applied in one pure step after validation (pgcopydb's defaults.h): the trusted Plan
 * that the rest of cloudshift sees is complete, with names parsed and durations in ms.
 */
import type { PlanInput } from './schema.js';
import { FLEXIBLE_SERVER, STORAGE_ACCOUNT, resolveResourceRef, type AzureResourceType } from './azureIds.js';
import { parseIdentifier, parseQualifiedName, type QualifiedName } from './names.js';
import { parseDurationMs, parseSizeBytes } from './units.js';

export const DEFAULTS = {
  stateSchema: 'cloudshift',
  copyJobs: 4,
  batchRows: 100_000,
  contentType: 'application/octet-stream',
  warnRetainedWal: '10GB',
  maxPause: '2s',
  maxLag: '1s',
  workerTimeout: '20s',
  existingData: 'refuse',
  resourceManagerEndpoint: 'https://management.azure.com',
} as const;

/** A plan value that may hold references; resolved only when used (see resolveSecret). */
export interface PlanValue {
  /** Where it sits in the plan, e.g. "source.postgres". */
  where: string;
  /** As written, references unresolved. Safe to show: it holds no secret values. */
  raw: string;
}

export interface TablePlan {
  name: QualifiedName;
  batchRows: number;
  where: string | undefined;
  replicaIdentity: 'full' | 'index' | 'insert-only' | undefined;
  /** Index in plan.tables, for messages. */
  index: number;
}

export interface DocumentPlan {
  table: QualifiedName;
  content: string;
  blob: string;
  contentType: string;
  metadata: Record<string, string>;
  tier: 'Hot' | 'Cool' | 'Cold' | 'Archive' | undefined;
  tags: Record<string, string>;
  keepColumn: string;
  index: number;
}

export interface BlobPlan {
  connectionString: PlanValue | undefined;
  account: string | undefined;
  sas: PlanValue | undefined;
  endpoint: string | undefined;
  container: string;
}

export type SwitchPlan =
  | { kind: 'pgbouncer'; admin: PlanValue; database: string; config: string }
  | { kind: 'command'; run: string }
  | { kind: 'arm'; resource: string; apiVersion: string; property: string; target: PlanValue; source: PlanValue };

/** An Azure resource the plan names, as a full ARM resource id. */
export interface AzureResourcePlan {
  id: string;
  subscriptionId: string;
  resourceGroup: string;
  name: string;
}

export interface AzurePlan {
  subscriptionId: string;
  resourceGroup: string;
  storageAccount: AzureResourcePlan | undefined;
  postgresServer: AzureResourcePlan;
  /** As written: relative to the plan's folder. */
  template: string | undefined;
  /** Without a trailing slash. */
  resourceManagerEndpoint: string;
  authorityHost: string | undefined;
}

export interface Plan {
  name: string;
  source: { postgres: PlanValue };
  target: { postgres: PlanValue; blob: BlobPlan | undefined; existingData: 'refuse' | 'truncate' };
  state: { postgres: PlanValue; schema: string };
  tables: TablePlan[];
  documents: DocumentPlan[];
  /** Sequences listed by the plan, beyond those the tables own or use (plan.sequences[i]). */
  sequences: QualifiedName[];
  copy: { jobs: number; batchRows: number; maxWorkers: number | undefined; workerTimeoutMs: number };
  sync: { mode: 'logical' | 'none'; slot: string; publication: string; warnRetainedWalBytes: number };
  cutover: { switch: SwitchPlan | undefined; maxPauseMs: number; maxLagMs: number };
  azure: AzurePlan | undefined;
}

/** Every table the plan migrates: its tables, then its documents tables. */
export function migratedTables(plan: Pick<Plan, 'tables' | 'documents'>): QualifiedName[] {
  return [...plan.tables.map((t) => t.name), ...plan.documents.map((d) => d.table)];
}

const value = (where: string, raw: string): PlanValue => ({ where, raw });

export function applyDefaults(input: PlanInput): Plan {
  const batchRows = input.copy?.batch?.rows ?? DEFAULTS.batchRows;
  const derived = `cloudshift_${input.name.replace(/-/g, '_')}`;
  const blob = input.target.blob;
  const sw = input.cutover?.switch;
  return {
    name: input.name,
    source: { postgres: value('source.postgres', input.source.postgres) },
    target: {
      postgres: value('target.postgres', input.target.postgres),
      blob: blob && {
        connectionString: blob.connectionString === undefined ? undefined : value('target.blob.connectionString', blob.connectionString),
        account: blob.account,
        sas: blob.sas === undefined ? undefined : value('target.blob.sas', blob.sas),
        endpoint: blob.endpoint,
        container: blob.container,
      },
      existingData: input.target.existingData ?? DEFAULTS.existingData,
    },
    state: {
      postgres: input.state?.postgres ? value('state.postgres', input.state.postgres) : value('target.postgres', input.target.postgres),
      schema: input.state?.schema ? parseIdentifier(input.state.schema) : DEFAULTS.stateSchema,
    },
    tables: (input.tables ?? []).map((t, index) => ({
      name: parseQualifiedName(t.name),
      batchRows: t.batch?.rows ?? batchRows,
      where: t.where,
      replicaIdentity: t.replicaIdentity,
      index,
    })),
    sequences: (input.sequences ?? []).map((q) => parseQualifiedName(q)),
    documents: (input.documents ?? []).map((d, index) => ({
      table: parseQualifiedName(d.table),
      content: parseIdentifier(d.content),
      blob: d.blob,
      contentType: d.contentType ?? DEFAULTS.contentType,
      metadata: d.metadata ?? {},
      tier: d.tier,
      tags: d.tags ?? {},
      keepColumn: parseIdentifier(d.keep.column),
      index,
    })),
    copy: {
      jobs: input.copy?.jobs ?? DEFAULTS.copyJobs,
      batchRows,
      maxWorkers: input.copy?.maxWorkers,
      workerTimeoutMs: parseDurationMs(input.copy?.workerTimeout ?? DEFAULTS.workerTimeout),
    },
    sync: {
      mode: input.sync?.mode ?? 'none',
      slot: input.sync?.slot ? parseIdentifier(input.sync.slot) : derived,
      publication: input.sync?.publication ? parseIdentifier(input.sync.publication) : derived,
      warnRetainedWalBytes: parseSizeBytes(input.sync?.warnRetainedWal ?? DEFAULTS.warnRetainedWal),
    },
    cutover: {
      switch: sw?.pgbouncer
        ? {
            kind: 'pgbouncer',
            admin: value('cutover.switch.pgbouncer.admin', sw.pgbouncer.admin),
            database: sw.pgbouncer.database,
            config: sw.pgbouncer.config,
          }
        : sw?.command
          ? { kind: 'command', run: sw.command.run }
          : sw?.arm
            ? {
                kind: 'arm',
                resource: sw.arm.resource,
                apiVersion: sw.arm.apiVersion,
                property: sw.arm.property,
                target: value('cutover.switch.arm.target', sw.arm.target),
                source: value('cutover.switch.arm.source', sw.arm.source),
              }
            : undefined,
      maxPauseMs: parseDurationMs(input.cutover?.maxPause ?? DEFAULTS.maxPause),
      maxLagMs: parseDurationMs(input.cutover?.maxLag ?? DEFAULTS.maxLag),
    },
    azure: input.azure && azureDefaults(input.azure),
  };
}

function azureDefaults(a: NonNullable<PlanInput['azure']>): AzurePlan {
  const ref = (t: AzureResourceType, v: string) => resolveResourceRef(t, v, a.subscriptionId, a.resourceGroup);
  return {
    subscriptionId: a.subscriptionId,
    resourceGroup: a.resourceGroup,
    storageAccount: a.storageAccount === undefined ? undefined : ref(STORAGE_ACCOUNT, a.storageAccount),
    postgresServer: ref(FLEXIBLE_SERVER, a.postgresServer),
    template: a.template,
    resourceManagerEndpoint: (a.resourceManagerEndpoint ?? DEFAULTS.resourceManagerEndpoint).replace(/\/+$/, ''),
    authorityHost: a.authorityHost?.replace(/\/+$/, ''),
  };
}
