/**
 * A PgBouncer of the test file's own in front of its source database, on a free loopback port,
 * as a non-root user (src/embedded/pgbouncer.ts). The application logs in with the harness's app
 * role (same name and password on both servers); cloudshift uses the admin console. Tests that
 * need it fail, not skip, when CI=true (.ci/run installs pgbouncer).
 */
import { findPgBouncer, PGBOUNCER_MISSING, startAppBouncer, type StartedPgBouncer } from '../../src/embedded/pgbouncer.js';
import { connectionUrl, harness, type FreshDatabases } from './db.js';

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

/** Call after the source's tables exist: the app role is granted what is there. */
export async function startTestBouncer(dbs: FreshDatabases): Promise<TestBouncer> {
  const { app } = harness();
  const b = await startAppBouncer({
    sourceUrl: connectionUrl('source', dbs.source),
    targetUrl: connectionUrl('target', dbs.target),
    appUser: app.user,
    appPassword: app.password,
    database: APP_DATABASE,
    settings: { server_login_retry: 1 },
  });
  return {
    bouncer: b.bouncer,
    appUrl: b.appUrl,
    adminUrl: b.adminUrl,
    env: { PGBOUNCER_ADMIN_URL: b.adminUrl },
    cutoverYaml: (extra = '') => `cutover:
  switch:
    ${b.switchYaml}
  maxPause: 5s
  maxLag: 1s
${extra}`,
    stop: () => b.bouncer.stop(),
  };
}
