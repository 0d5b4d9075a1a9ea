/**
 * A PgBouncer of the test file's own in front of its source database, on a free loopback port,
 * as a non-root user (src/embedded/pgbouncer.ts). The application logs in with the harness's app
 * role (same name and password on both servers); cloudshift uses the admin console. Tests that
 * need it fail, not skip, when CI=true (.ci/run installs pgbouncer).
 */
import { randomBytes } from 'node:crypto';
import { findPgBouncer, PGBOUNCER_MISSING, startPgBouncer, type StartedPgBouncer } from '../../src/embedded/pgbouncer.js';
import { freePorts } from '../../src/embedded/util.js';
import { harness, sql, type FreshDatabases } from './db.js';

export const ADMIN_USER = 'cloudshift_admin';
export const APP_DATABASE = 'app';

export interface TestBouncer {
  bouncer: StartedPgBouncer;
  /** What the application connects to. */
  appUrl: string;
  adminUrl: string;
  /** The plan's `cutover` section for this PgBouncer. */
  cutoverYaml(extra?: string): string;
  env: Record<string, string>;
  stop(): Promise<void>;
}

/** Whether the PgBouncer tests can run here; on CI a missing pgbouncer is a failure. */
export function pgbouncerAvailable(): boolean {
  if (findPgBouncer()) return true;
  if (process.env.CI === 'true') throw new Error(PGBOUNCER_MISSING);
  return false;
}

/** Grants the app role what an application has: its tables and sequences, on both sides. */
export async function grantApp(dbs: FreshDatabases): Promise<void> {
  const user = harness().app.user;
  const q = `"${user}"`;
  await sql(
    'source',
    dbs.source,
    `GRANT ALL ON ALL TABLES IN SCHEMA public TO ${q}; GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO ${q}; GRANT USAGE ON SCHEMA public TO ${q}`,
  );
  // Tables cloudshift creates on the target later get the same.
  await sql(
    'target',
    dbs.target,
    `GRANT USAGE, CREATE ON SCHEMA public TO ${q};
     ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO ${q};
     ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON SEQUENCES TO ${q}`,
  );
}

export async function startTestBouncer(dbs: FreshDatabases): Promise<TestBouncer> {
  const h = harness();
  const [port] = await freePorts(1);
  const adminPassword = randomBytes(18).toString('base64url');
  const bouncer = await startPgBouncer({
    port: port!,
    databases: { [APP_DATABASE]: { host: h.source.host, port: h.source.port, dbname: dbs.source } },
    users: { [h.app.user]: h.app.password, [ADMIN_USER]: adminPassword },
    adminUser: ADMIN_USER,
    // Waiting clients must outlast any pause the tests provoke.
    settings: { query_wait_timeout: 60, server_login_retry: 1 },
  });
  const adminUrl = bouncer.url(ADMIN_USER, adminPassword, 'pgbouncer');
  return {
    bouncer,
    appUrl: bouncer.url(h.app.user, h.app.password, APP_DATABASE),
    adminUrl,
    env: { PGBOUNCER_ADMIN_URL: adminUrl },
    cutoverYaml: (extra = '') => `cutover:
  switch:
    pgbouncer: { admin: "\${env:PGBOUNCER_ADMIN_URL}", database: ${APP_DATABASE}, config: "${bouncer.databasesFile}" }
  maxPause: 5s
  maxLag: 1s
${extra}`,
    stop: () => bouncer.stop(),
  };
}
