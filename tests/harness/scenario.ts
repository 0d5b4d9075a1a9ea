/**
 * A migration scenario for integration tests: fresh source and target databases (the source
 * loaded with the hospital fixture), a plan file in a temporary folder, and the environment the
 * plan's references resolve from.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connectionUrl, freshContainer, freshDatabases, harness, sql, type FreshDatabases } from './db.js';
import { scratchDir } from '../../src/embedded/util.js';

export interface Scenario {
  dbs: FreshDatabases;
  container: string;
  dir: string;
  env: Record<string, string>;
  /** Writes a plan file (YAML text) into the scenario's folder and returns its path. */
  plan(text: string, name?: string): string;
  drop(): Promise<void>;
}

export const HOSPITAL_SQL = readFileSync(new URL('../fixtures/hospital.sql', import.meta.url), 'utf8');

export async function hospitalScenario(prefix: string, options: { load?: boolean } = {}): Promise<Scenario> {
  const dbs = await freshDatabases(prefix);
  if (options.load !== false) await sql('source', dbs.source, HOSPITAL_SQL);
  const container = await freshContainer(prefix);
  const dir = scratchDir(`cs-${prefix}`);
  const env = {
    SOURCE_DATABASE_URL: connectionUrl('source', dbs.source),
    TARGET_DATABASE_URL: connectionUrl('target', dbs.target),
    AZURE_STORAGE_CONNECTION_STRING: harness().azurite.connectionString,
  };
  return {
    dbs,
    container,
    dir,
    env,
    plan(text, name = 'plan.yaml') {
      const file = join(dir, name);
      writeFileSync(file, text.replaceAll('{{container}}', container));
      return file;
    },
    drop: () => dbs.drop(),
  };
}

/** A hospital scenario of one test's own, with `sourceSql` run on its source; dropped after `body`. */
export async function inScenario(prefix: string, sourceSql: string, body: (s: Scenario) => Promise<void>): Promise<void> {
  const s = await hospitalScenario(prefix);
  try {
    await sql('source', s.dbs.source, sourceSql);
    await body(s);
  } finally {
    await s.drop();
  }
}

/**
 * Ends the state-store session holding the scenario's active run's lock (`run`, or the `switch`
 * lock of a cutover or rollback; the store in the target database, as by default), as a failover
 * or a dropped connection would: PostgreSQL releases the lock. Resolves once the backend is
 * gone; returns how many sessions were ended.
 */
export async function cutRunLockSession(s: Scenario, lock: 'run' | 'switch' = 'run'): Promise<number> {
  const ended = await sql<{ ok: boolean }>(
    'target',
    s.dbs.target,
    `SELECT pg_terminate_backend(l.pid, 10000) AS ok FROM pg_locks l JOIN cloudshift.runs r ON r.status = 'active'
      WHERE l.locktype = 'advisory' AND l.granted
        AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtextextended('cloudshift.' || $1 || ':' || r.id::text, 0)`,
    [lock],
  );
  return ended.filter((r) => r.ok).length;
}

/** The hospital plan with documents to Blob and live sync, as tests start from. */
export const HOSPITAL_PLAN = `version: 1
name: hospital
source: { postgres: "\${env:SOURCE_DATABASE_URL}" }
target:
  postgres: "\${env:TARGET_DATABASE_URL}"
  blob: { connectionString: "\${env:AZURE_STORAGE_CONNECTION_STRING}", container: "{{container}}" }
tables:
  - name: public.patients
  - name: public.encounters
  - name: public.observations
  - name: public.medications
documents:
  - table: public.documents
    content: content
    blob: "patients/{patient_id}/{id}-{filename}"
    contentType: "{mime_type}"
    keep: { column: blob_path }
sync: { mode: logical }
`;
