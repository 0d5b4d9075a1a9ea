/**
 * `cloudshift demo`: a whole migration on local servers — a PostgreSQL 15 source with a small
 * hospital record, a PostgreSQL 17 target — through the same plan, dry run and run an operator
 * uses. Servers and data live in temporary folders and are removed at the end.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import type { EventSink } from '../engine/events.js';
import { runMigration, type RunResult } from '../engine/run.js';
import { startLocalServers } from '../embedded/servers.js';
import { loadPlan } from '../plan/parse.js';
import { runPreflight } from '../preflight/run.js';
import type { PreflightReport } from '../preflight/types.js';
import { createHospitalDataset } from './dataset.js';
import { APP_SQL, AppSimulator } from './appSimulator.js';
import { findPgBouncer, startAppBouncer, type AppBouncer } from '../embedded/pgbouncer.js';
import { cutover } from '../cutover/commands.js';
import type { SwitchResult } from '../cutover/switchOver.js';
import { cleanupRun } from '../sync/cleanup.js';

export interface DemoOptions {
  scale: number;
  jobs: number;
  onStep(message: string): void;
  onEvent?: EventSink;
  /** Called with the dry run's report before the run starts. */
  onPreflight?(report: PreflightReport, planFile: string): void;
  abortSignal?: AbortSignal;
}

export interface DemoResult {
  planFile: string;
  preflight: PreflightReport;
  run: RunResult | null;
  cutover: SwitchResult | null;
  /** The application writing through PgBouncer all along (when pgbouncer is installed). */
  application: { transactions: number; errors: string[]; slowestMs: number } | null;
}

export const DEMO_PLAN = `# The plan the demo runs: a hospital's record tables, copied in verified batches, and its
# clinical letters (bytea) and scans (large objects) moved to Blob Storage (Azurite).
version: 1
name: demo
source: { postgres: "\${env:SOURCE_DATABASE_URL}" }
target:
  postgres: "\${env:TARGET_DATABASE_URL}"
  blob: { connectionString: "\${env:AZURE_STORAGE_CONNECTION_STRING}", container: documents }
tables:
  - name: public.patients
  - name: public.encounters
  - name: public.observations
  - name: public.medications
  # The application simulator's tables (src/demo/appSimulator.ts), written to throughout.
  - name: public.accounts
  - name: public.ledger
  - name: public.events
documents:
  - table: public.documents
    content: content
    blob: "patients/{patient_id}/letters/{id}-{filename}"
    contentType: "{mime_type}"
    metadata: { kind: "{kind}" }
    keep: { column: blob_path }
  - table: public.scans
    content: image
    blob: "patients/{patient_id}/scans/{id}-{filename}"
    contentType: "{mime_type}"
    tier: Cool
    keep: { column: blob_path }
copy: { jobs: 4, batch: { rows: 20000 } }
sync: { mode: logical }
cutover:
  switch: {{switch}}
  maxPause: 2s
`;

async function exec(url: string, sql: string): Promise<void> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    await c.query(sql);
  } finally {
    await c.end();
  }
}

export async function runDemo(options: DemoOptions): Promise<DemoResult> {
  options.onStep('starting PostgreSQL 15 (source), PostgreSQL 17 (target) and Azurite (Blob Storage) on loopback');
  const servers = await startLocalServers({ azurite: true });
  let bouncer: AppBouncer | null = null;
  let app: AppSimulator | null = null;
  // The plan's folder: removed with the servers, as nothing else can use the plan after them.
  let dir: string | null = null;
  try {
    await exec(servers.url('source', 'postgres'), 'CREATE DATABASE ehr');
    await exec(servers.url('target', 'postgres'), 'CREATE DATABASE ehr');
    options.onStep(`creating a hospital record at scale ${options.scale}`);
    const source = new pg.Client({ connectionString: servers.url('source', 'ehr') });
    await source.connect();
    try {
      const made = await createHospitalDataset(
        source,
        { scale: options.scale, documents: { count: 200, totalBytes: 20 * 1024 * 1024, maxBytes: 4 * 1024 * 1024 }, largeObjects: true },
        (m) => options.onStep(`  ${m}`),
      );
      options.onStep(
        `  ${Object.entries(made.rows)
          .map(([t, n]) => `${t} ${n.toLocaleString('en-GB')}`)
          .join(', ')}`,
      );
    } finally {
      await source.end();
    }
    await exec(servers.url('source', 'ehr'), APP_SQL);
    const env: Record<string, string> = {
      SOURCE_DATABASE_URL: servers.url('source', 'ehr'),
      TARGET_DATABASE_URL: servers.url('target', 'ehr'),
      AZURE_STORAGE_CONNECTION_STRING: servers.azurite!.connectionString,
    };
    // With PgBouncer installed, an application writes through it during the whole migration.
    if (findPgBouncer()) {
      options.onStep('starting PgBouncer in front of the source, and an application writing through it (50 transactions/s)');
      bouncer = await startAppBouncer({
        sourceUrl: env.SOURCE_DATABASE_URL!,
        targetUrl: env.TARGET_DATABASE_URL!,
        appUser: 'ehr_app',
        appPassword: randomBytes(18).toString('base64url'),
      });
      env.PGBOUNCER_ADMIN_URL = bouncer.adminUrl;
      app = new AppSimulator(bouncer.appUrl, 50, 'demo');
      app.start();
    } else {
      options.onStep('pgbouncer is not installed: the cutover runs a command instead, and no application writes meanwhile');
    }
    dir = mkdtempSync(join(tmpdir(), 'cloudshift-demo-'));
    const planFile = join(dir, 'demo.yaml');
    writeFileSync(
      planFile,
      DEMO_PLAN.replace('jobs: 4', `jobs: ${options.jobs}`).replace(
        '{{switch}}',
        bouncer ? `{ ${bouncer.switchYaml} }` : `{ command: { run: "true" } }`,
      ),
    );
    const loaded = await loadPlan(planFile);
    options.onStep(`dry run of ${planFile}`);
    const preflight = await runPreflight(loaded, { env });
    options.onPreflight?.(preflight, planFile);
    if (!preflight.ok) return { planFile, preflight, run: null, cutover: null, application: null };
    options.onStep('cloudshift run --until synced');
    const run = await runMigration(loaded, {
      env,
      until: 'synced',
      ...(options.onEvent ? { onEvent: options.onEvent } : {}),
      ...(options.abortSignal ? { abortSignal: options.abortSignal } : {}),
    });
    let switched: SwitchResult | null = null;
    if (!run.interrupted && run.mismatches === 0 && !options.abortSignal?.aborted) {
      options.onStep('cloudshift cutover');
      switched = await cutover(loaded, { env, say: (m) => options.onStep(`  ${m}`) });
      if (app) await app.waitFor(20);
      options.onStep('cloudshift cleanup (the migration is over: the reverse slot kept for rollback goes)');
      await cleanupRun(loaded, env);
    }
    await app?.stop();
    const application = app
      ? { transactions: app.count, errors: app.errors.map((e) => e.message), slowestMs: Math.round(app.slowestMs) }
      : null;
    return { planFile, preflight, run, cutover: switched, application };
  } finally {
    await app?.stop().catch(() => undefined);
    await bouncer?.bouncer.stop().catch(() => undefined);
    options.onStep('stopping the local servers');
    await servers.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  }
}
