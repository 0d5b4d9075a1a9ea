/**
 * startLocalServers() on its own: a second pair of servers besides the harness's, as
 * `cloudshift demo` and the benchmark start them.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { startLocalServers } from '../../src/embedded/servers.js';
import type { LocalServers } from '../../src/embedded/servers.js';

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function query<R extends pg.QueryResultRow>(url: string, text: string): Promise<R[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<R>(text)).rows;
  } finally {
    await client.end();
  }
}

describe('startLocalServers', () => {
  let servers: LocalServers | undefined;
  afterAll(async () => {
    await servers?.stop();
  });

  it('starts PostgreSQL 15 (logical) and 17, and stop() removes every trace', { timeout: 180_000 }, async () => {
    const lines: string[] = [];
    const signals = ['SIGINT', 'SIGTERM', 'SIGHUP', 'exit'] as const;
    const listeners = (): number[] => signals.map((s) => process.listenerCount(s));
    const before = listeners();
    servers = await startLocalServers({
      azurite: false,
      onLog: (line) => lines.push(line),
      extraTargetFlags: ['-c', 'work_mem=8MB'],
      // As the CLI would: it owns the signals; only the 'exit' safety net is installed.
      installSignalCleanup: false,
    });
    expect(listeners()).toEqual([before[0], before[1], before[2], before[3]! + 1]);
    const { source, target } = servers;

    expect(servers.azurite).toBeNull();
    expect(source).toMatchObject({ host: '127.0.0.1', user: 'postgres', version: 15 });
    expect(target).toMatchObject({ host: '127.0.0.1', user: 'postgres', version: 17 });
    expect(source.port).not.toBe(target.port);
    expect(servers.url('source', 'postgres')).toBe(
      `postgres://postgres:${encodeURIComponent(source.password)}@127.0.0.1:${source.port}/postgres`,
    );

    const [sv] = await query<{ v: string; wal: string }>(
      servers.url('source', 'postgres'),
      `SELECT current_setting('server_version_num') AS v, current_setting('wal_level') AS wal`,
    );
    expect(sv?.v).toMatch(/^15/);
    expect(sv?.wal).toBe('logical');
    const [tv] = await query<{ v: string; mem: string }>(
      servers.url('target', 'postgres'),
      `SELECT current_setting('server_version_num') AS v, current_setting('work_mem') AS mem`,
    );
    expect(tv?.v).toMatch(/^17/);
    expect(tv?.mem).toBe('8MB'); // extraTargetFlags reached the server

    // Server output went to onLog, labelled.
    expect(lines.some((l) => l.startsWith('[pg15] ') && l.includes('ready to accept connections'))).toBe(true);
    expect(lines.some((l) => l.startsWith('[pg17] '))).toBe(true);

    const pids = [source, target].map((s) => Number.parseInt(readFileSync(path.join(s.dataDir, 'postmaster.pid'), 'utf8'), 10));
    for (const pid of pids) expect(isAlive(pid)).toBe(true);
    const dirs = [source, target].flatMap((s) => [s.dataDir, path.dirname(s.dataDir)]);

    const stopping = servers.stop();
    expect(servers.stop()).toBe(stopping); // idempotent
    await stopping;
    expect(listeners()).toEqual(before);
    for (const pid of pids) expect(isAlive(pid), `postmaster ${pid}`).toBe(false);
    for (const dir of dirs) expect(existsSync(dir), dir).toBe(false);
    await expect(query(servers.url('source', 'postgres'), 'SELECT 1')).rejects.toThrow();
  });
});
