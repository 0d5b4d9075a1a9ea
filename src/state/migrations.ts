/**
 * Applies the state store's knex migrations safely when several cloudshift processes start at
 * once: a session advisory lock (keyed by the schema name) serialises them, so each process
 * either applies the pending migrations or finds none left. A schema that has migrations this
 * binary does not know was made by a newer cloudshift and is refused (graphile-worker migrate.ts).
 */
import type { Knex } from 'knex';
import type pg from 'pg';
import * as m20261123000001 from '../../migrations/20261123000001_init.js';
import * as m20261123000002 from '../../migrations/20261123000002_documents.js';
import * as m20261123000003 from '../../migrations/20261123000003_sync.js';
import * as m20261123000004 from '../../migrations/20261123000004_cutover.js';
import * as m20261124000005 from '../../migrations/20261124000005_document_sweep.js';
import * as m20261124000006 from '../../migrations/20261124000006_set_aside_constraints.js';
import * as m20261124000007 from '../../migrations/20261124000007_released_blobs.js';
import * as m20261125000008 from '../../migrations/20261125000008_sweep_returns.js';
import * as m20261125000009 from '../../migrations/20261125000009_lag_samples.js';
import { StateConflictError } from '../errors.js';
import { quoteIdent, quoteLiteral } from '../plan/names.js';

interface MigrationModule {
  up(knex: Knex): Promise<void>;
  down(knex: Knex): Promise<void>;
}

export const MIGRATIONS: ReadonlyArray<{ name: string; module: MigrationModule }> = [
  { name: '20261123000001_init', module: m20261123000001 },
  { name: '20261123000002_documents', module: m20261123000002 },
  { name: '20261123000003_sync', module: m20261123000003 },
  { name: '20261123000004_cutover', module: m20261123000004 },
  { name: '20261124000005_document_sweep', module: m20261124000005 },
  { name: '20261124000006_set_aside_constraints', module: m20261124000006 },
  { name: '20261124000007_released_blobs', module: m20261124000007 },
  { name: '20261125000008_sweep_returns', module: m20261125000008 },
  { name: '20261125000009_lag_samples', module: m20261125000009 },
];

export const MIGRATIONS_TABLE = 'knex_migrations';

/** The migration that brought live sync's tables (applied_lsn, switches): a reader of an older schema goes without. */
export const SYNC_MIGRATION = '20261123000003_sync';
/** The migration that keeps the sync's lag over time (lag_samples). */
export const LAG_MIGRATION = '20261125000009_lag_samples';

export const migrationSource: Knex.MigrationSource<{ name: string; module: MigrationModule }> = {
  getMigrations: () => Promise.resolve([...MIGRATIONS]),
  getMigrationName: (m) => m.name,
  getMigration: (m) => Promise.resolve(m.module),
};

export function lockKeySql(schema: string): string {
  return `hashtextextended(${quoteLiteral(`cloudshift.state:${schema}`)}, 0)`;
}

export interface SchemaStatus {
  exists: boolean;
  applied: string[];
  /** Migrations in the database this binary does not know. */
  unknown: string[];
  /** Migrations this binary has that are not applied yet. */
  pending: string[];
}

/** Read-only look at the state schema (used by dry-run and before migrating). */
export async function inspectSchema(client: pg.Client, schema: string): Promise<SchemaStatus> {
  const { rows } = await client.query<{ exists: boolean }>(`SELECT to_regclass($1) IS NOT NULL AS exists`, [
    `${quoteIdent(schema)}.${quoteIdent(MIGRATIONS_TABLE)}`,
  ]);
  const exists = rows[0]?.exists === true;
  const applied = exists
    ? (await client.query<{ name: string }>(`SELECT name FROM ${quoteIdent(schema)}.${quoteIdent(MIGRATIONS_TABLE)} ORDER BY id`)).rows.map(
        (r) => r.name.replace(/\.(ts|js)$/, ''),
      )
    : [];
  const known = new Set(MIGRATIONS.map((m) => m.name));
  return {
    exists,
    applied,
    unknown: applied.filter((n) => !known.has(n)),
    pending: MIGRATIONS.map((m) => m.name).filter((n) => !applied.includes(n)),
  };
}

export function schemaTooNew(schema: string, status: SchemaStatus): StateConflictError {
  return new StateConflictError(
    `the state store schema "${schema}" was created by a newer cloudshift (it has migration ${status.unknown.join(', ')}, which this version does not know)`,
    { hint: 'upgrade cloudshift to the version that created this run, or use another state.schema' },
  );
}

/** Bring the state schema up to date. `lockClient` is a dedicated session for the advisory lock. */
export async function migrateSchema(knex: Knex, lockClient: pg.Client, schema: string): Promise<void> {
  await lockClient.query(`SELECT pg_advisory_lock(${lockKeySql(schema)})`);
  try {
    const status = await inspectSchema(lockClient, schema);
    if (status.unknown.length > 0) throw schemaTooNew(schema, status);
    if (status.pending.length === 0) return;
    await lockClient.query(`CREATE SCHEMA IF NOT EXISTS ${quoteIdent(schema)}`);
    await knex.migrate.latest({ migrationSource, schemaName: schema, tableName: MIGRATIONS_TABLE });
  } finally {
    await lockClient.query(`SELECT pg_advisory_unlock(${lockKeySql(schema)})`);
  }
}
